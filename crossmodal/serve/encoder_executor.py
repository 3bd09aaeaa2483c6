"""What both encoder executors share as Jina adapters."""
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from docarray import DocList
from jina import Executor, requests

from crossmodal.api.schemas import ContentDoc

T = TypeVar("T")


class EncoderExecutor(Executor):
    """The model runs in one worker thread (``self.worker``), never blocking Jina's event loop;
    ``/recommend`` passes through, since Jina requires every hop after the recommender to bind it.

    Every torch call of the process belongs in that thread, loading included: OpenMP gives each
    calling thread its own team, and a second team spinning beside the encoding one cost a
    short ViT-B-32 text query 36 -> 23 ms and a one-image post 136 -> 111 ms here (2 cores).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.worker = ThreadPoolExecutor(1)

    def in_worker(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` in the model's thread and wait for it (for loading, outside any request)."""
        return self.worker.submit(fn, *args, **kwargs).result()

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return None

    def close(self) -> None:
        self.worker.shutdown()
        super().close()
