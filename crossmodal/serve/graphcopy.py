"""Per-request copies of the gateway's topology graph that share what no request changes.

Jina's gateway deep-copies the Flow's ``TopologyGraph`` for every request, so that each
request keeps its own progress (parts received, times, status) in its own nodes. The copy
also took each node's endpoint-discovery answer: the executors' endpoint list and JSON
schemas (a protobuf), the pydantic models built from them, the gRPC metadata and the
``when`` condition. These are set once, at start-up, and only read while a request runs;
copying them cost 1.85 ms of the gateway's CPU per request, a quarter of its work on a
text query. Here a node's copy shares them and deep-copies everything else, so an
attribute this module does not name (a newer Jina's) is still copied per request.
"""
from __future__ import annotations

import copy
from typing import Any

from jina.serve.runtimes.gateway.graph.topology_graph import TopologyGraph

# Written by endpoint discovery or the Flow's YAML before requests run; only read by them.
SHARED_NODE_FIELDS = frozenset({"endpoints", "_endpoints_proto", "_pydantic_models_by_endpoint",
                                "_metadata", "_filter_condition", "logger"})
SHARED_GRAPH_FIELDS = frozenset({"_all_endpoints", "logger"})


def _copy_sharing(shared: frozenset):
    def __deepcopy__(self, memo: dict) -> Any:
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        for name, value in vars(self).items():
            setattr(twin, name, value if name in shared else copy.deepcopy(value, memo))
        return twin
    return __deepcopy__


def share_read_only_state() -> None:
    """Install the sharing copies (idempotent; the gateway process calls it at start)."""
    TopologyGraph._ReqReplyNode.__deepcopy__ = _copy_sharing(SHARED_NODE_FIELDS)
    TopologyGraph.__deepcopy__ = _copy_sharing(SHARED_GRAPH_FIELDS)
