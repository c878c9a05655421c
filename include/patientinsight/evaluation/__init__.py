"""Retrieval quality, measured leave-one-out: metrics and query sets, every retriever on a version, the
publish gate, and the BEIR benchmark files."""
