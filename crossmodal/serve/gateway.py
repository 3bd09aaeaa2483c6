"""The Flow's gateway: Jina's own gRPC and HTTP servers, plus the web page and request guards on HTTP.

Jina has no option to serve static files, and a separate web server would need its
own port, process and CORS set-up. Instead the HTTP server keeps Jina's FastAPI app
(every endpoint, ``/docs``, the ``GET /`` health check) and gains ``/ui/``, served
from the repository's ``ui/`` folder.

The HTTP server also answers every request whole and refuses what it cannot serve
before doing the work (issue 15): ``guard_requests`` checks body size, document count
and client routing before anything is parsed into documents; ``answer_whole`` sends
the documents through the Flow in chunks, one after the other, and answers once all
are done, mapping client errors to 4xx and an unreachable executor to 503. HTTP and
gRPC servers check tokens (``crossmodal.serve.auth``) before anything else. Loaded by
the Flow YAML through ``py_modules``; it imports only light parts of ``crossmodal``
(no torch).
"""
import contextvars
import json
import math
import re
import sys
from functools import partial
from pathlib import Path
from typing import Optional

from jina.enums import ProtocolType
from jina.parsers.helper import _get_gateway_class
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # py_modules loading does not put the repository on the path
    sys.path.insert(0, str(ROOT))

from crossmodal.serve import requestlog  # noqa: E402
from crossmodal.serve.asgi import send_json  # noqa: E402
from crossmodal.serve.auth import OPEN_GRPC_SERVICES, Authenticator, GRPCAuthInterceptor, add_http_auth  # noqa: E402
from crossmodal.serve.orchestrate import orchestrate  # noqa: E402
from crossmodal.serve.render import json_answer  # noqa: E402
from crossmodal.settings import LIMITS, Limits  # noqa: E402

UI_DIR = ROOT / "ui"
UI_PATH = "/ui"
CLIENT_ERRORS = {"RequestError"}  # exception names (crossmodal.api.validate) answered with 422
UNAVAILABLE = {"ShardUnavailable"}  # crossmodal.api.merge: answered 503, naming the shards
ROUTING_KEYS = ("target_executor", "targetExecutor")  # header fields only the gateway may set
KEEPALIVE_PING_MS = 5000  # the pings without data a client may send, as the executors allow (Flow YAML)
# position -> why, for listed documents of the HTTP request being answered whose fields have the
# wrong type: the body guard finds them before Jina validates, ``answer_whole`` answers them
_TYPE_ERRORS: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("crossmodal_type_errors",
                                                                              default=None)


class Refused(Exception):
    """An answer other than 200, with a JSON body naming what was wrong."""

    def __init__(self, status: int, detail: str, **names):
        super().__init__(detail)
        self.status, self.body = status, {"detail": detail, **names}


def refusal(body: bytes, limits: Limits = LIMITS):
    """Why a JSON request body is refused before Jina parses it into documents, or None."""
    return screened(body, limits)[0]


def screened(body: bytes, limits: Limits = LIMITS, path: str = "") -> tuple[Optional[Refused], bytes, dict[int, str]]:
    """Why a JSON request body is refused before Jina parses it into documents, or None; the
    body to hand on, whose documents keep only ``CLIENT_FIELDS``; and the listed documents
    that fail on a field's type, by position (``client_documents``). On ``ID_ENDPOINTS`` a
    document without an ``id`` fails too: DocArray would give it a random one, and /delete
    answered ``not_found`` for an id nobody sent.

    A body that is not JSON is left to FastAPI (422). Counting documents here costs one
    ``json.loads`` of a body already bounded by ``max_body_bytes``, while a million empty
    documents parsed into DocArray would cost the gateway a gigabyte.
    """
    try:
        request = json.loads(body)
    except RecursionError:
        return Refused(400, "body: JSON nested too deeply", field="body"), body, {}
    except ValueError:
        return None, body, {}
    if not isinstance(request, dict):
        return None, body, {}
    error = value_error("parameters", request.get("parameters"), limits.max_tags_depth)
    if error:
        return Refused(422, error[1], field=error[0]), body, {}
    data = request.get("data")
    if isinstance(data, list) and len(data) > limits.max_docs_per_request:
        return Refused(413, f"data: {len(data)} documents exceed max_docs_per_request="
                            f"{limits.max_docs_per_request}; send them in several requests",
                       limit="max_docs_per_request"), body, {}
    header = request.get("header")
    if isinstance(header, dict) and any(header.get(key) for key in ROUTING_KEYS):
        return Refused(400, "header.target_executor: clients cannot route requests; "
                            "every request goes through the whole Flow", field="header.target_executor"), body, {}
    refused, dropped, errors = client_documents(data)
    if refused is None and path in ID_ENDPOINTS:
        refused = _missing_ids(data, errors, limits)
    if refused is None and (dropped or errors):
        body = json.dumps(request).encode()
    return refused, body, errors


ID_ENDPOINTS = frozenset({"/delete"})  # an id names what the request acts on


def _missing_ids(data, errors: dict[int, str], limits: Limits) -> Optional[Refused]:
    """Add, by position, the listed documents that carry no ``id``; refuse a single one."""
    from crossmodal.api.validate import id_required

    reason = id_required(limits)
    if isinstance(data, dict):
        return None if data.get("id") is not None else Refused(422, f"data.{reason}", field="data.id")
    for i, doc in enumerate(data if isinstance(data, list) else []):
        if doc.get("id") is None:
            errors.setdefault(i, reason)
    return None


def client_documents(data) -> tuple[Optional[Refused], bool, dict[int, str]]:
    """Drop what a client may not set from the documents of ``data`` (in place), and check the
    rest: why the request is refused, or None; whether any field was dropped; and, by position,
    why a listed document fails on a field's type (it is replaced by a bare one, answered with
    that error, and its siblings go on). Jina types ``data`` as one document or a list of them,
    and pydantic, when the list failed validation, read it as ONE document made of pairs:
    ``[{"id": "a", "text": []}]`` became the document ``{"id": "text"}``, and a /delete removed
    the item "text"."""
    from pydantic import ValidationError

    from crossmodal.api.schemas import CLIENT_FIELDS, ContentDoc

    docs = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    dropped, errors = False, {}
    for i, doc in enumerate(docs):
        where = f"data[{i}]" if isinstance(data, list) else "data"
        if not isinstance(doc, dict):
            return Refused(422, f"{where}: must be a JSON object (a document), got {type(doc).__name__}",
                           field=where), dropped, errors
        for name in doc.keys() - CLIENT_FIELDS:
            del doc[name]
            dropped = True
        error = _string_error(doc)
        if error is None:
            try:
                ContentDoc(**doc)
            except ValidationError as err:
                first = err.errors()[0]
                error = ".".join(str(part) for part in first["loc"]), first["msg"]
        if error is not None:
            field, message = error
            if not isinstance(data, list):
                return Refused(422, f"{where}.{field}: {message}", field=f"{where}.{field}"), dropped, errors
            errors[i] = f"{field}: {message}"
            docs[i] = {"id": doc["id"]} if isinstance(doc.get("id"), str) else {}
    return None, dropped, errors


STRING_FIELDS = ("id", "owner", "modality", "text", "uri")


def _string_error(doc: dict) -> Optional[tuple[str, str]]:
    """A string field sent as another JSON type: pydantic turned ``7`` into ``"7"`` (a /delete of
    ``{"id": 7}`` removed the item "7"), ``true`` into ``"True"``, and failed the whole request
    for a list."""
    for name in STRING_FIELDS:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            return name, "str type expected"  # pydantic's words, as for the other type errors
    return None


def value_error(name: str, value, depth: int) -> Optional[tuple[str, str]]:
    """(field, reason) for what JSON allows but no executor can be sent: NaN or infinite
    numbers, lone surrogates, nesting deeper than ``depth``; None when the value can travel."""
    if isinstance(value, float) and not math.isfinite(value):
        return name, f"{name}: not a finite number ({value})"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name, f"{name}: not valid Unicode (a lone surrogate)"
        return None
    if isinstance(value, (dict, list)):
        if depth < 0:
            return name, f"{name}: nested too deeply"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            error = value_error(name, str(key), 0) if isinstance(key, str) else None
            error = error or value_error(f"{name}.{key}" if isinstance(value, dict) else f"{name}[{key}]",
                                         item, depth - 1)
            if error:
                return error
    return None


async def _answer(scope, send, refused: Refused) -> None:
    await send_json(scope, send, refused.status, refused.body)


def guard_requests(app, limits: Limits = LIMITS):
    """ASGI middleware: refuse oversized or client-routed requests before they are parsed.

    Reads at most ``max_body_bytes`` (a larger body is answered 413 without reading the
    rest, and nothing of it is echoed), then replays the body to the app. Paths with a
    NUL byte are answered 400 instead of failing in the static-file server.
    """
    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if "\x00" in scope["path"]:
            return await _answer(scope, send, Refused(400, "path: contains a NUL character", field="path"))
        if scope["method"] != "POST":
            return await app(scope, receive, send)
        too_big = Refused(413, f"body: larger than max_body_bytes={limits.max_body_bytes}",
                          limit="max_body_bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            return await _answer(scope, send, too_big)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limits.max_body_bytes:
                return await _answer(scope, send, too_big)
            more = message.get("more_body", False)
        refused, body, type_errors = screened(b"".join(chunks), limits, scope["path"])
        if refused is not None:
            return await _answer(scope, send, refused)
        scope["headers"] = [(key, str(len(body)).encode() if key == b"content-length" else value)
                            for key, value in scope["headers"]]
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        token = _TYPE_ERRORS.set(type_errors)
        try:
            return await app(scope, replay, send)
        finally:
            _TYPE_ERRORS.reset(token)

    return guarded


def _executor_name(text: str) -> str:
    """Jina names the deployment only inside the error's text."""
    found = re.search(r"(?:deployment `?|connections .* for )([\w-]+)", text or "")
    return found.group(1) if found else "unknown"


def _client_error(status):
    """A 422 for an executor's ``RequestError``, naming the parameter when the message does."""
    message = status.exception.args[0] if status.exception.args else status.description
    found = re.search(r"parameter '(\w+)'", message) or re.match(r"(data[\w.\[\]]*): ", message)
    return Refused(422, message, **({"field": found.group(1)} if found else {}))


def _carry_error(doc) -> Optional[str]:
    """Why a document's ``tags`` (the one free-form field) cannot be serialised for the
    executors, e.g. integers beyond protobuf's range, or None. Only the tags are tried: the
    other fields are typed, and the bytes of an image need not be serialised twice."""
    if not doc.tags:
        return None
    try:
        type(doc)(tags=doc.tags).to_protobuf()
        return None
    except (ValueError, TypeError, OverflowError) as err:
        return f"tags: cannot be carried ({str(err)[:200]})"


def _document_errors(docs, doc_type) -> dict:
    """Position -> error document for documents that could not even travel to an executor
    (invalid Unicode, NUL, tags too deep or numbers too large for protobuf); their siblings
    go on. The fields a client may not set are dropped first (``CLIENT_FIELDS``: only the
    encoders make embeddings, and a ``feedback`` of ``[[1, 2]]`` could not even be carried)."""
    from crossmodal.api.convert import sendable
    from crossmodal.api.schemas import CLIENT_FIELDS
    from crossmodal.api.validate import strings_error

    errors = {}
    for i, doc in enumerate(docs):
        for name in doc.__fields__.keys() - CLIENT_FIELDS:
            if getattr(doc, name) is not None:
                setattr(doc, name, None)
        error = strings_error(doc) or _carry_error(doc)
        if error:
            errors[i] = doc_type(id=sendable(doc.id), status="error", error=error)
    return errors


WHOLE_REQUESTS = frozenset({"/stats", "/recommend"})


def answer_whole(streamer, limits: Limits = LIMITS) -> None:
    """Make this streamer's ``stream_docs`` yield ONE response holding every document.

    Jina's HTTP route sends the documents in requests of 100 and answers with the first
    response, while the rest is still processed after the answer. Here the documents go
    in chunks of ``chunk_docs``, one after the other (a concurrent search waits for one
    chunk, not the whole request), and the route gets a single response once all are done.
    """
    original = streamer.stream_docs

    async def stream_docs(docs, request_size: int = 100, return_results: bool = False, **kwargs):
        from docarray import DocList
        from jina.excepts import EstablishGrpcConnectionError, InternalNetworkError
        from jina.proto import jina_pb2

        from crossmodal.api.convert import sendable

        if not return_results:  # Jina's own health checks
            async for resp in original(docs, request_size=request_size, return_results=return_results, **kwargs):
                yield resp
            return
        kwargs["target_executor"] = None
        doc_type = kwargs["return_type"].doc_type
        bad = _document_errors(docs, doc_type)
        for i, error in (_TYPE_ERRORS.get() or {}).items():  # found by the body guard (client_documents)
            if i < len(docs):
                bad[i] = doc_type(id=sendable(docs[i].id), status="error", error=error)
        good = DocList[docs.doc_type]([d for i, d in enumerate(docs) if i not in bad])
        responses = []
        # /stats and /recommend answer the request, not each document: never cut them
        chunk_docs = limits.chunk_docs if kwargs.get("exec_endpoint") not in WHOLE_REQUESTS else max(len(good), 1)
        try:
            for start in range(0, max(len(good), 1), chunk_docs):
                chunk = good[start:start + chunk_docs]
                async for resp in original(chunk, request_size=max(len(chunk), 1), return_results=True,
                                           **{**kwargs, "request_id": kwargs.get("request_id") if start == 0 else None}):
                    status = resp.header.status
                    if status.code == jina_pb2.StatusProto.ERROR:
                        if status.exception.name in CLIENT_ERRORS:
                            raise _client_error(status)
                        if status.exception.name in UNAVAILABLE:
                            raise Refused(503, status.exception.args[0] if status.exception.args else
                                          status.description, executor="indexer")
                        yield resp  # a server fault: Jina answers 500
                        return
                    responses.append(resp)
        except (InternalNetworkError, EstablishGrpcConnectionError) as err:  # a stop, a crash, a network cut
            detail = err.details() if isinstance(err, InternalNetworkError) else str(err)
            name = _executor_name(detail)
            raise Refused(503, f"executor {name!r} is unreachable: {detail}", executor=name) from None
        last = responses[-1]
        if len(responses) == 1 and not bad:  # one chunk, nothing refused (any query): rendered from protobuf
            last.to_dict = partial(json_answer, last, doc_type=doc_type)
            yield last
            return
        merged = [doc for resp in responses for doc in resp.docs]
        if len(merged) == len(good):
            for i in sorted(bad):
                merged.insert(i, bad[i])
        else:  # an endpoint that answers other documents than it got (/stats)
            merged.extend(bad[i] for i in sorted(bad))
        answer = DocList[doc_type](merged)
        last.data.docs = answer
        last.to_dict = partial(json_answer, last, answer)  # not read back from protobuf again
        yield last

    streamer.stream_docs = stream_docs


def add_ui(app, ui_dir: Path = UI_DIR, path: str = UI_PATH):
    """Mount the page on a FastAPI app and send browsers that open ``/`` to it.

    ``GET /`` stays Jina's JSON health check for every client but a browser (one that
    asks for HTML), so readiness probes and ``Flow`` start-up checks are unaffected.
    """
    from starlette.staticfiles import StaticFiles

    if not (ui_dir / "index.html").is_file():
        raise FileNotFoundError(f"ui_dir: {ui_dir} has no index.html")
    app.mount(path, StaticFiles(directory=ui_dir, html=True), name="ui")

    app.add_middleware(_BrowsersToUI, to=f"{path}/")
    return app


class _BrowsersToUI:
    """Redirects a browser's ``GET /`` to the page. Plain ASGI: Starlette's ``@app.middleware``
    runs every request through a task and memory streams of its own (~10 % of the gateway's
    CPU on a text query)."""

    def __init__(self, app, to: str):
        self.app, self.to = app, to

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/":
            from starlette.datastructures import Headers
            from starlette.responses import RedirectResponse

            if "text/html" in Headers(scope=scope).get("accept", ""):
                return await RedirectResponse(self.to)(scope, receive, send)
        await self.app(scope, receive, send)


class UIHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway with the web page and the request guards added; usable alone
    for HTTP-only Flows."""

    @property
    def app(self):
        from starlette.responses import JSONResponse

        answer_whole(self.streamer)
        orchestrate(self.streamer)
        if requestlog.enabled():
            requestlog.count_streamer(self.streamer)  # inside the token check's wrapper: sees the user
        app = add_ui(super().app)

        @app.exception_handler(Refused)
        async def refused(request, error: Refused):
            return JSONResponse(error.body, status_code=error.status)

        app.add_middleware(_Guard)
        return app


class _Guard:
    """``guard_requests`` in the form ``app.add_middleware`` takes (outermost layer)."""

    def __init__(self, app):
        self.guarded = guard_requests(app)

    async def __call__(self, scope, receive, send):
        await self.guarded(scope, receive, send)


class AuthHTTPGateway(UIHTTPGateway):
    """Checks tokens and sets the acting user (crossmodal/serve/auth.py)."""

    @property
    def app(self):
        app = add_http_auth(super().app, self._request_handler.streamer, Authenticator.from_env())
        if requestlog.enabled():
            app.add_middleware(requestlog.HTTPRequestLog)  # outermost: refusals are logged too
        return app


class AuthGRPCGateway(GRPCGateway):
    """Checks the ``authorization`` metadata and sets the acting user (crossmodal/serve/auth.py)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Jina lets a gRPC message be any size: one message of a gigabyte would be held whole;
        # and Jina's clients ping every 10 s when idle, which gRPC's default tolerance (one per
        # 5 min) answered with GOAWAY "too_many_pings" (see the Flow YAML)
        options = dict(self.grpc_server_options or {})
        options["grpc.max_receive_message_length"] = LIMITS.max_body_bytes
        options["grpc.http2.min_ping_interval_without_data_ms"] = KEEPALIVE_PING_MS
        self.grpc_server_options = options
        orchestrate(self.streamer)
        interceptors = list(self.grpc_tracing_server_interceptors or [])
        logged = [requestlog.GRPCRequestLog(OPEN_GRPC_SERVICES)] if requestlog.enabled() else []
        self.grpc_tracing_server_interceptors = [*logged, GRPCAuthInterceptor(Authenticator.from_env()), *interceptors]


def server_class(protocol):
    """The server for one protocol of the Flow: ours for HTTP and gRPC, Jina's otherwise."""
    return {ProtocolType.HTTP: AuthHTTPGateway, ProtocolType.GRPC: AuthGRPCGateway}.get(
        protocol) or _get_gateway_class(protocol)


class CrossmodalGateway(CompositeGateway):
    """One server per protocol of the Flow, as Jina's default gateway, with the UI on HTTP
    and token checks on HTTP and gRPC."""

    def __init__(self, **kwargs):
        # CompositeServer.__init__ only builds the servers, always with Jina's classes;
        # build them here instead with ours (server_class).
        CompositeBaseServer.__init__(self, **kwargs)
        if requestlog.enabled():
            requestlog.configure()
        self.servers = [server_class(args["runtime_args"]["protocol"])(**args) for args in self._server_kwargs]
        self.gateways = self.servers  # the name Jina's older code reads
        # client routing (target_executor) is cleared on gRPC by the auth interceptor, which
        # runs whether or not tokens are required (crossmodal/serve/auth.py)
