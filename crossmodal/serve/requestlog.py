"""One JSON line per request at the gateway, so a person can follow traffic across shards.

Each line holds the time, protocol, endpoint, number of documents, status (HTTP code,
or the gRPC / Jina status name), milliseconds and the acting user when one is known,
and never any content: no text, image, id, tag or parameter value. Lines go to the
gateway's stderr through the ``logging`` logger ``OPS.request_logger``, on unless
``ServiceConfig.request_log`` is off (``CROSSMODAL_REQUEST_LOG=0`` in the gateway's
environment).

HTTP: an ASGI middleware, outermost so refusals (401, 413) are logged too; the number of
documents and the user come from the Flow call (``count_streamer``), not from parsing the
body again. gRPC: a server interceptor in front of the token check; Jina's data calls
stream requests, so each request of a stream gets its own line when its response leaves.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Optional

import grpc

from crossmodal.settings import AUTH, OPS

LOG = logging.getLogger(OPS.request_logger)
# the HTTP request being served: the streamer records its documents and user here
_CURRENT: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("crossmodal_request_log", default=None)


def enabled() -> bool:
    return os.environ.get("CROSSMODAL_REQUEST_LOG", "1") == "1"


def configure() -> None:
    """Lines alone on stderr, whatever the root logger does (Jina's processes configure their own)."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


def line(protocol: str, endpoint: str, docs: Optional[int], status, ms: float, user: Optional[str]) -> str:
    return json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "protocol": protocol,
                       "endpoint": endpoint, "docs": docs, "status": status, "ms": round(ms, 1), "user": user})


def emit(*args) -> None:
    LOG.info(line(*args))


# -- HTTP ------------------------------------------------------------------------------
class HTTPRequestLog:
    """ASGI middleware: one line per HTTP request once its response has started."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, info = time.perf_counter(), {"docs": None, "user": None, "status": None}
        token = _CURRENT.set(info)

        async def sending(message):
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _CURRENT.reset(token)
            emit("http", scope["path"], info["docs"], info["status"] or 500,
                 (time.perf_counter() - start) * 1000, info["user"])


def count_streamer(streamer) -> None:
    """The documents and acting user of each HTTP call into the Flow, for its log line."""
    original = streamer.stream_docs

    def stream_docs(docs, *args, parameters=None, **kwargs):
        info = _CURRENT.get()
        if info is not None and kwargs.get("return_results"):  # not Jina's own health checks
            info["docs"] = len(docs)
            info["user"] = ((parameters or {}).get(AUTH.parameter) or {}).get("name")
        return original(docs, *args, parameters=parameters, **kwargs)

    streamer.stream_docs = stream_docs


# -- gRPC ------------------------------------------------------------------------------
def _docs(request) -> Optional[int]:
    """Documents in a Jina data request, without turning them into DocArray objects."""
    data = request.proto_with_data.data
    return len(data.docs.docs) if data.WhichOneof("documents") == "docs" else None


def _user(request) -> Optional[str]:
    return (dict(request.parameters or {}).get(AUTH.parameter) or {}).get("name")


class GRPCRequestLog(grpc.aio.ServerInterceptor):
    """In front of the token check: refused calls are logged as UNAUTHENTICATED."""

    def __init__(self, skip: tuple = ()):
        self.skip = skip  # health, reflection, dry-run ...: probes, not traffic

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.skip) or not handler.request_streaming:
            return handler
        return handler._replace(stream_stream=_logged(handler.stream_stream)) if handler.response_streaming \
            else handler._replace(stream_unary=_logged_unary(handler.stream_unary))


async def _tracked(request_iterator, pending: dict):
    """The client's requests, each remembered with its start time until its response is logged."""
    async for request in request_iterator:
        pending[request.header.request_id] = (time.perf_counter(), request, _docs(request))
        yield request


def _logged(behaviour):
    async def call(request_iterator, context):
        pending = {}
        try:
            async for response in behaviour(_tracked(request_iterator, pending), context):
                _emit_response(pending, response)
                yield response
        except BaseException:
            _emit_failed(pending, context)
            raise

    return call


def _logged_unary(behaviour):
    async def call(request_iterator, context):
        pending = {}
        try:
            response = await behaviour(_tracked(request_iterator, pending), context)
        except BaseException:
            _emit_failed(pending, context)
            raise
        _emit_response(pending, response)
        return response

    return call


def _emit_response(pending: dict, response) -> None:
    start, request, docs = pending.pop(response.header.request_id, (None, None, None))
    if request is None:
        return
    code = response.header.status.code
    status = "OK" if code == 0 else response.header.status.StatusCode.Name(code)
    emit("grpc", request.header.exec_endpoint or "/", docs, status, (time.perf_counter() - start) * 1000,
         _user(request))


def _emit_failed(pending: dict, context) -> None:
    code = context.code() if hasattr(context, "code") else None
    status = getattr(code, "name", None) or "CANCELLED"
    for start, request, docs in pending.values():
        emit("grpc", request.header.exec_endpoint or "/", docs, status, (time.perf_counter() - start) * 1000, None)
    if not pending:  # refused before any request was read through (e.g. no token)
        emit("grpc", "/", None, status, 0.0, None)
    pending.clear()
