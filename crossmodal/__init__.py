"""crossmodal: cross-modal (text/image) retrieval and recommendation on Jina + DocArray."""

__version__ = "0.1.0"
