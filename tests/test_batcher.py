"""Continuous batching: no wait when idle, merged batches under load, failures stay with their request."""
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from crossmodal.model.batcher import ContinuousBatcher


def _recorder(delay: float = 0.05, fail_on=None):
    calls = []

    def fn(items: list) -> None:
        calls.append(list(items))
        time.sleep(delay)  # the model computing: new requests queue meanwhile
        if fail_on is not None and fail_on in items:
            raise ValueError(f"bad item {fail_on}")
        for item in items:
            item["done"] = threading.get_ident()

    return fn, calls


def test_lone_request_runs_alone_and_requests_queued_meanwhile_merge():
    fn, calls = _recorder()
    worker = ThreadPoolExecutor(1)

    async def main():
        batcher = ContinuousBatcher(fn, max_items=16, worker=worker)
        await batcher.run([{"id": "alone"}])
        first = asyncio.ensure_future(batcher.run([{"id": "first"}]))
        await asyncio.sleep(0.01)  # the first is computing: the next nine queue
        requests = [[{"id": i}] for i in range(9)]
        await asyncio.gather(first, *(batcher.run(r) for r in requests))
        return requests

    requests = asyncio.run(main())
    assert [len(c) for c in calls] == [1, 1, 9]  # nobody waited for company; the queue ran as one batch
    assert [x["id"] for x in calls[2]] == list(range(9))  # in arrival order
    assert all("done" in r[0] for r in requests)


def test_max_items_caps_merging_but_not_a_single_big_request():
    fn, calls = _recorder(delay=0.02)
    worker = ThreadPoolExecutor(1)

    async def main():
        batcher = ContinuousBatcher(fn, max_items=4, worker=worker)
        await asyncio.gather(batcher.run([{"id": "big", "n": i} for i in range(7)]),
                             *(batcher.run([{"id": i}]) for i in range(6)))

    asyncio.run(main())
    assert [len(c) for c in calls] == [7, 4, 2]


def test_a_failing_request_fails_alone():
    fn, calls = _recorder(fail_on="poison")
    worker = ThreadPoolExecutor(1)

    async def main():
        batcher = ContinuousBatcher(fn, max_items=16, worker=worker)
        first = asyncio.ensure_future(batcher.run([{"id": "first"}]))
        await asyncio.sleep(0.01)  # the first is computing: the next three queue and merge
        good1, good2 = [{"id": 1}], [{"id": 2}]
        results = await asyncio.gather(batcher.run(good1), batcher.run(["poison"]), batcher.run(good2),
                                       return_exceptions=True)
        await first
        return results, good1, good2

    results, good1, good2 = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError) and "poison" in str(results[1])
    assert "done" in good1[0] and "done" in good2[0]


def test_empty_request_never_calls_the_model():
    fn, calls = _recorder()
    asyncio.run(ContinuousBatcher(fn, 4, ThreadPoolExecutor(1)).run([]))
    assert calls == []


@pytest.mark.parametrize("n", [1, 5])
def test_calls_never_overlap(n):
    active, peak = [0], [0]
    lock = threading.Lock()

    def fn(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1

    worker = ThreadPoolExecutor(1)

    async def main():
        a, b = ContinuousBatcher(fn, 2, worker), ContinuousBatcher(fn, 2, worker)  # two endpoints, one model
        await asyncio.gather(*(x.run([i]) for i in range(n) for x in (a, b)))

    asyncio.run(main())
    assert peak[0] == 1
