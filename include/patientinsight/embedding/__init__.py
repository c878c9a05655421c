"""Embeddings: the sentence-transformers encoder (torch or ONNX Runtime) and the ONNX export."""
