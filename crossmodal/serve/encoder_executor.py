"""What both encoder executors share as Jina adapters."""
from concurrent.futures import ThreadPoolExecutor

from docarray import DocList
from jina import Executor, requests

from crossmodal.api.schemas import ContentDoc


class EncoderExecutor(Executor):
    """The model runs in one worker thread (``self.worker``), never blocking Jina's event loop;
    ``/recommend`` passes through, since Jina requires every hop after the recommender to bind it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.worker = ThreadPoolExecutor(1)

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return None

    def close(self) -> None:
        self.worker.shutdown()
        super().close()
