"""Send many documents to the Flow in requests bounded by count and by bytes.

The gateway refuses a gRPC message above ``max_body_bytes`` (one request must not cost
the server unbounded memory), so a client posting a photo folder cannot cut requests by
count alone: 32 phone photos of 5 MB are 160 MB. Requests here hold at most ``max_docs``
documents and, past their first, at most ``max_bytes`` of payload; a few of them are in
flight at once, so the encoder (or its replicas) never waits for the client.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Iterable, Iterator, Optional

from crossmodal.settings import LIMITS

# what one request may carry besides its payload (ids, tags, protobuf framing) stays well
# inside the other half of the gateway's limit
REQUEST_BYTES = LIMITS.max_body_bytes // 2


def payload_bytes(doc) -> int:
    """Bytes a document adds to a request, up to its framing: image bytes plus text."""
    return len(doc.blob or b"") + len((doc.text or "").encode())


def request_batches(docs: Iterable, max_docs: int, max_bytes: int = REQUEST_BYTES) -> Iterator[list]:
    """Consecutive runs of ``docs`` of at most ``max_docs`` documents and ``max_bytes`` of
    payload; a document larger than ``max_bytes`` alone travels alone."""
    if max_docs < 1:
        raise ValueError(f"max_docs: must be >= 1, got {max_docs}")
    batch, size = [], 0
    for doc in docs:
        n = payload_bytes(doc)
        if batch and (len(batch) >= max_docs or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += n
    if batch:
        yield batch


async def _post_batches(client, endpoint: str, batches: Iterable[list], on_done: Callable, in_flight: int,
                        parameters: Optional[dict], return_type) -> None:
    async def post(batch: list) -> None:
        async for response in client.post(endpoint, inputs=batch, request_size=len(batch), parameters=parameters,
                                          return_type=return_type, return_responses=True):
            on_done(response)

    running: set[asyncio.Task] = set()
    try:
        for batch in batches:  # read lazily: at most ``in_flight`` batches are held at once
            if len(running) >= in_flight:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(post(batch)))
        for task in asyncio.as_completed(running):
            await task
    finally:
        for task in running:
            task.cancel()


def post_all(client, endpoint: str, docs: Iterable, on_done: Callable, max_docs: int, *,
             max_bytes: int = REQUEST_BYTES, in_flight: int = 4, parameters: Optional[dict] = None) -> None:
    """Post ``docs`` to ``endpoint`` of the Flow that the Jina ``client`` reaches, in
    requests from ``request_batches``; ``on_done`` gets each response (its ``docs`` typed
    as ``ContentDoc``) as it arrives. A request that fails raises; the rest are cancelled."""
    from docarray import DocList
    from jina import Client

    from crossmodal.api.schemas import ContentDoc

    async_client = Client(host=client.args.host, port=client.args.port, asyncio=True)
    asyncio.run(_post_batches(async_client, endpoint, request_batches(docs, max_docs, max_bytes), on_done,
                              in_flight, parameters or {}, DocList[ContentDoc]))
