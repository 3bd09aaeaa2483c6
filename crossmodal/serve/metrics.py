"""The indexer's own Prometheus metrics, beside the request counts and latencies Jina exports.

Jina gives an executor started with ``monitoring`` a ``prometheus_client`` registry
(``runtime_args.metrics_registry``) that its metrics endpoint serves; without monitoring
there is none and these calls do nothing. Each series carries the shard, so a scrape of
every shard shows how the collection is spread.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from crossmodal.settings import MODALITIES

INDEXED = "crossmodal_documents_indexed"  # prometheus_client appends _total to counters
SIZE = "crossmodal_index_documents"


class IndexMetrics:
    """Documents stored by ``/index`` (by status) and documents held per modality, per shard."""

    def __init__(self, registry, shard: int = 0):
        self.shard = str(shard)
        self._indexed = self._size = None
        if registry is None:
            return
        from prometheus_client import Counter, Gauge

        self._indexed = Counter(INDEXED, "Documents /index stored on this shard, by status (indexed, updated)",
                                labelnames=("shard", "status"), registry=registry)
        self._size = Gauge(SIZE, "Documents this shard holds, by modality", labelnames=("shard", "modality"),
                           registry=registry)

    @classmethod
    def of(cls, runtime_args) -> IndexMetrics:
        """From an executor's ``runtime_args`` (a registry only when monitoring is on)."""
        return cls(getattr(runtime_args, "metrics_registry", None), getattr(runtime_args, "shard_id", 0) or 0)

    def stored(self, statuses: Iterable[Optional[str]]) -> None:
        if self._indexed is not None:
            for status in statuses:
                if status in ("indexed", "updated"):
                    self._indexed.labels(self.shard, status).inc()

    def sizes(self, count: Callable[[str], int]) -> None:
        """Documents held per modality, counted only when monitoring is on: a COUNT over the
        store is not work every /index and /delete should pay for nothing."""
        if self._size is not None:
            for modality in MODALITIES:
                self._size.labels(self.shard, modality).set(count(modality))
