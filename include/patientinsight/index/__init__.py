"""Versioned vector indexes: the interface (types), the lake's version folders (versions, records), the
embedded implementation (embedded*), the Pinecone one (pinecone*), the BM25 index built with every
version (lexical), and the configured choice (factory).
"""
