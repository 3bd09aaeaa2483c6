"""Requests the gateway prepares through the Flow before sending them on.

/recommend clusters a user's whole history and /refine needs the marked items, but
with the indexer in shards on several machines no executor can read another's store.
So the gateway asks the Flow first (``/history``, ``/labels``: every shard answers its
part, the shards' merger joins them), puts the answer into the request's documents and
only then sends the request itself; after /recommend, which picks without thumbnails,
it fetches the picked images' thumbnails and the post that names each interest (``/items``). Both protocols go through
this, as it wraps the one request handler that Jina's gRPC and HTTP servers share.
It also stamps each /index request with one posting time for every shard, refuses client
requests to the internal steps (they carry embeddings), and drops the executors' internal
parameters (the signed acting user, the posting time) from every answer.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Optional

from docarray import DocList
from jina.proto import jina_pb2
from jina.types.request.data import DataRequest

from crossmodal.api.params import boolean
from crossmodal.api.schemas import CLIENT_FIELDS, ContentDoc
from crossmodal.serve.graphcopy import share_read_only_state
from crossmodal.settings import AUTH, LIMITS, POSTED_AT

PREPARE = {"/recommend": "/history", "/refine": "/labels"}
INTERNAL_ENDPOINTS = frozenset(PREPARE.values())
INTERNAL_PARAMETERS = (AUTH.parameter, POSTED_AT)


def _request(endpoint: str, parameters: dict, docs: DocList[ContentDoc]) -> DataRequest:
    req = DataRequest()
    req.document_array_cls = DocList[ContentDoc]
    req.data.docs = docs
    req.header.exec_endpoint = endpoint
    req.parameters = parameters
    return req


def _docs(req: DataRequest) -> DocList[ContentDoc]:
    """The request's documents as ``ContentDoc`` (HTTP hands over its own pydantic copies)."""
    docs = req.docs
    if docs.doc_type is ContentDoc:
        return docs
    return DocList[ContentDoc].from_protobuf(docs.to_protobuf())


async def _send(handler: Callable, endpoint: str, parameters: dict, docs: DocList[ContentDoc]) -> DataRequest:
    future, _ = handler(request=_request(endpoint, parameters, docs), return_type=DocList[ContentDoc])
    response = await future
    response.document_array_cls = DocList[ContentDoc]
    return response


def _failed(response: DataRequest) -> bool:
    return response.header.status.code == jina_pb2.StatusProto.ERROR


async def _fill_previews(handler: Callable, parameters: dict, response: DataRequest) -> DataRequest:
    """Thumbnails of the picked images (when asked for) and the post naming each interest,
    from the shards that own them, in one capped request."""
    docs = _docs(response)
    missing = []
    if boolean("with_thumbnails", parameters.get("with_thumbnails", False)):
        missing = [m for d in docs for group in (d.from_text, d.from_image) if group is not None
                   for m in group.image_matches or [] if m.thumbnail is None]
    seeds = [s for d in docs for s in d.seeds or [] if s.post_id]
    ids = list(dict.fromkeys([s.post_id for s in seeds] + [m.id for m in missing]))[:LIMITS.max_thumbnails_per_response]
    if not ids:
        return response
    found = await _send(handler, "/items", parameters, DocList[ContentDoc]([ContentDoc(id=i) for i in ids]))
    if _failed(found):
        return found
    items = {d.id: d for d in found.docs if d.status == "ok"}
    for m in missing:
        m.thumbnail = items[m.id].thumbnail if m.id in items else None
    for seed in seeds:
        if seed.post_id in items:
            seed.post_text, seed.post_thumbnail = items[seed.post_id].text, items[seed.post_id].thumbnail
    response.data.docs = docs
    return response


def _refused(request: DataRequest, message: str) -> DataRequest:
    """The request answered as a client error (HTTP 422, gRPC ``RequestError``), sent nowhere."""
    request.header.status.code = jina_pb2.StatusProto.ERROR
    request.header.status.description = message
    request.header.status.exception.name = "RequestError"
    request.header.status.exception.args.append(message)
    return request


async def _prepared(handler: Callable, request: DataRequest, return_type: Any) -> DataRequest:
    """What the request needs from every shard, gathered once per request: it travels on the
    first document only, so its size never grows with the number of documents."""
    endpoint, parameters = request.header.exec_endpoint, dict(request.parameters)
    request.document_array_cls = DocList[ContentDoc]
    docs = _docs(request)
    if endpoint == "/recommend" and len(docs) > 1:
        return _refused(request, f"data: /recommend answers one document per request, got {len(docs)}")
    gathered = await _send(handler, PREPARE[endpoint], parameters,
                           DocList[ContentDoc]([ContentDoc(id=PREPARE[endpoint].strip("/"))]))
    if _failed(gathered):
        gathered.header.request_id = request.header.request_id
        return gathered
    [source] = gathered.docs
    if not len(docs):
        docs = DocList[ContentDoc]([ContentDoc(id=endpoint.strip("/"))])
    docs[0].posts, docs[0].sample = source.posts, source.sample
    request.data.docs = docs
    future, _ = handler(request=request, return_type=return_type)
    response = await future
    if endpoint == "/recommend" and not _failed(response):
        response = await _fill_previews(handler, parameters, response)
    return response


def _internal_fields_dropped(response: DataRequest) -> DataRequest:
    """The signed acting user and the posting time are for the executors, not the client."""
    parameters = response.parameters
    if any(key in parameters for key in INTERNAL_PARAMETERS):
        response.parameters = {k: v for k, v in parameters.items() if k not in INTERNAL_PARAMETERS}
    return response


def _screened(request: DataRequest) -> Optional[str]:
    """Why a client's documents are refused, or None once every field it may not set
    (``CLIENT_FIELDS``) is dropped, on the wire, before any executor parses them: a gRPC client
    could otherwise hand the indexer its own posts or a shard stamp, and a ``feedback`` of ``0``
    failed every executor's parse. Packed documents (``docs_bytes``) are unpacked first."""
    data = request.proto_with_data.data
    if data.WhichOneof("documents") == "docs_bytes":
        try:
            request.data.docs = DocList[ContentDoc].from_bytes(data.docs_bytes)
        except Exception as err:  # noqa: BLE001  (any decoding failure is the client's bytes)
            return f"data.docs_bytes: not documents this service reads ({type(err).__name__})"
        data = request.proto_with_data.data
    if data.WhichOneof("documents") != "docs":
        return None
    if len(data.docs.docs) > LIMITS.max_docs_per_request:  # HTTP bodies are counted before parsing
        return (f"data: {len(data.docs.docs)} documents exceed max_docs_per_request="
                f"{LIMITS.max_docs_per_request}; send them in several requests")
    for doc in data.docs.docs:
        for name in [name for name in doc.data if name not in CLIENT_FIELDS]:
            del doc.data[name]
    return None


async def _answered(request: DataRequest, return_type: Any, handler: Callable, shards: int) -> DataRequest:
    endpoint = request.header.exec_endpoint
    if endpoint in INTERNAL_ENDPOINTS:  # they hand out embeddings: only the gateway asks them
        return _refused(request, f"endpoint: {endpoint} is internal to the service (the gateway asks it "
                                 "before /recommend and /refine)")
    refused = _screened(request)
    if refused:
        return _refused(request, refused)
    if endpoint == "/index":  # one posting time for every shard
        request.parameters = {**request.parameters, POSTED_AT: time.time()}
    if endpoint in PREPARE and not (endpoint == "/refine" and shards == 1):  # one shard has the marks itself
        response = await _prepared(handler, request, return_type)
    else:
        future, _ = handler(request=request, return_type=return_type)
        response = await future
    return _internal_fields_dropped(response)


def _retrieved(answer: asyncio.Future) -> None:
    """Mark a failed answer as seen. Its client gets the failure when it awaits the answer; a client
    that hung up (Ctrl-C on ``app.py -t index``) never does, and asyncio then printed a traceback
    per unawaited answer on the gateway's stderr."""
    if not answer.cancelled():
        answer.exception()


def orchestrate(streamer) -> None:
    """Every client request goes through ``_answered`` (see the module's docstring)."""
    inner = streamer._streamer  # Jina's RequestStreamer: both protocols end in its request handler
    if getattr(inner, "crossmodal_orchestrated", False):
        return
    handler = inner._request_handler
    share_read_only_state()
    shards = int(os.environ.get("CROSSMODAL_SHARDS", "1"))  # the Flow's environment (serve/flow.py)

    def handle(request: DataRequest, return_type: Any = None):
        answer = asyncio.ensure_future(_answered(request, return_type, handler, shards))
        answer.add_done_callback(_retrieved)
        return answer, None

    inner._request_handler, inner.crossmodal_orchestrated = handle, True
