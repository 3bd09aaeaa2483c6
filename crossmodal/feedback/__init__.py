"""Relevance feedback: refine a search from results a person marked relevant or not.

``core`` turns labelled embeddings into one search direction (Rocchio's moved query, or a
linear classifier's weight vector); ``search`` runs that direction through the same FAISS
indexes as ``/search``, so a refinement costs about one search.
"""
