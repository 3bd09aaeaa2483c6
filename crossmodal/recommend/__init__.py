"""Recommendations from a user's own history: a pure core (``core``), the recommender's
side that plans seeds from the history (``plan``), and the indexer's side that turns
seeds into picks with the FAISS index (``pick``)."""
