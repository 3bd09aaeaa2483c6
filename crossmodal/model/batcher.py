"""Continuous batching: requests that arrive while the model is busy run together next.

Jina's ``@dynamic_batching`` cuts a batch when a timer fires: measured here with 16
concurrent one-text clients and a 3 ms wait, its batches held 1-3 queries (arrivals
are spread out by the hops before the encoder), and a longer wait is paid in full by
every lone request. This batcher never waits: an idle model starts on the first
request at once, and whatever arrives while it computes is merged into the next
call, so batches grow exactly as fast as the load does. One worker thread runs the
model, so calls never overlap (torch already uses every core for one call).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Optional, Sequence, TypeVar

T = TypeVar("T")


class ContinuousBatcher(Generic[T]):
    """``await batcher.run(items)`` calls ``fn`` on a list that may also hold other requests' items.

    ``fn`` works in place on the items it gets (the documents); ``max_items`` caps how
    many items of several requests one call merges (a single larger request runs whole).
    Batchers sharing ``worker`` share its thread, so their calls never overlap either.
    """

    def __init__(self, fn: Callable[[list[T]], None], max_items: int, worker: ThreadPoolExecutor):
        self.fn, self.max_items, self.worker = fn, max_items, worker
        self._pending: list[tuple[Sequence[T], asyncio.Future]] = []
        self._draining = False
        self._task: Optional[asyncio.Task] = None  # held: the event loop keeps only weak references

    async def run(self, items: Sequence[T]) -> None:
        if not items:
            return
        future = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if not self._draining:
            self._draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        await future

    def _take(self) -> list[tuple[Sequence[T], asyncio.Future]]:
        taken, count = [], 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self.max_items):
            taken.append(self._pending.pop(0))
            count += len(taken[-1][0])
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                groups = self._take()
                try:
                    await loop.run_in_executor(self.worker, self.fn, [x for items, _ in groups for x in items])
                except Exception as err:  # noqa: BLE001  (rerun each request alone: only the failing one fails)
                    if len(groups) == 1:
                        groups[0][1].set_exception(err)
                    else:
                        await self._one_by_one(groups)
                    continue
                for _, future in groups:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._draining = False

    async def _one_by_one(self, groups) -> None:
        loop = asyncio.get_running_loop()
        for items, future in groups:
            try:
                await loop.run_in_executor(self.worker, self.fn, list(items))
            except Exception as err:  # noqa: BLE001  (handed to the request that caused it)
                if not future.done():
                    future.set_exception(err)
            else:
                if not future.done():
                    future.set_result(None)
