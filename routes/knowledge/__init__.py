"""The knowledge a RAG route answers from: embedders, the index, ingest, lexical and hybrid retrieval."""
