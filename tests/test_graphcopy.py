"""The gateway's per-request graph copies share the discovery answers and nothing else."""
import copy

from jina.serve.runtimes.gateway.graph.topology_graph import TopologyGraph

from crossmodal.serve.graphcopy import SHARED_GRAPH_FIELDS, SHARED_NODE_FIELDS, share_read_only_state


def _discovered_graph() -> TopologyGraph:
    """The served Flow's shape, with each node's discovery answer filled in as at start-up."""
    graph = TopologyGraph({"start-gateway": ["clip"], "clip": ["indexer"], "indexer": ["end-gateway"]})
    for node in graph.all_nodes:
        node._endpoints_proto = (object(), None)
        node.endpoints = ["/search", "/index"]
        node._pydantic_models_by_endpoint = {"/search": {"input": dict, "output": dict}}
    graph._all_endpoints = {"/search", "/index"}
    return graph


def test_jina_nodes_still_hold_the_fields_that_are_shared():
    """A Jina that renamed them would silently copy them again: fail here instead."""
    graph = _discovered_graph()
    for node in graph.all_nodes:
        assert SHARED_NODE_FIELDS <= set(vars(node)), sorted(SHARED_NODE_FIELDS - set(vars(node)))
    assert SHARED_GRAPH_FIELDS <= set(vars(graph))


def test_a_request_copy_shares_discovery_and_owns_its_progress():
    share_read_only_state()
    graph = _discovered_graph()
    twin = copy.deepcopy(graph)
    pairs = list(zip(graph.all_nodes, twin.all_nodes))
    assert [n.name for n, _ in pairs] == ["clip", "indexer", "__end_gateway__"]
    for node, copied in pairs:
        assert copied is not node and type(copied) is type(node)
        for name in SHARED_NODE_FIELDS:
            assert getattr(copied, name) is getattr(node, name), name
        assert copied.parts_to_send is not node.parts_to_send
        assert copied.outgoing_nodes is not node.outgoing_nodes
    assert twin._all_endpoints is graph._all_endpoints
    # the copy's structure links its own nodes, never the original's
    clip, indexer, end = (c for _, c in pairs)
    assert twin.origin_nodes == [clip] and clip.outgoing_nodes == [indexer] and indexer.outgoing_nodes == [end]
    # one request's progress is not another's
    clip.parts_to_send.append("request part")
    clip.status, clip.result_in_params_returned = "done", {"k": 1}
    original = graph.origin_nodes[0]
    assert original.parts_to_send == [] and original.status is None and original.result_in_params_returned is None
    assert copy.deepcopy(graph).origin_nodes[0].parts_to_send == []
