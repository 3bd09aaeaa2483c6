"""Storage and vectors: the SQLite source of truth, FAISS per modality, and ContentIndex keeping them in step."""
