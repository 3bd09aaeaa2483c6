"""Authentication at the gateway: check the token, then tell the executors who is acting.

The gateway is the only place that sees client credentials. It checks the token
(HTTP ``Authorization: Bearer <token>``, gRPC metadata ``authorization``) against
the users table, answers 401 / UNAUTHENTICATED with the same message whatever was
wrong, and otherwise writes the user into the request parameters under
``AUTH.parameter``, always after dropping any value a client put there, with or
without authentication: a client can never name the acting user itself.
``crossmodal/api/identity.py`` applies the per-endpoint rules in the executors.

Open without a token: HTTP GET/HEAD/OPTIONS (web page, OpenAPI docs, health and
status; CORS pre-flights) and the gRPC health, reflection, dry-run, discovery and
info services. Every request that carries documents needs one.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import grpc

from crossmodal.index.users import User, Users, signature, signing_key
from crossmodal.serve.asgi import send_json
from crossmodal.settings import AUTH, AuthSettings

REFUSED = "unauthenticated: a valid token is required (HTTP 'Authorization: Bearer <token>', gRPC metadata 'authorization')"
OPEN_HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_GRPC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/jina.JinaGatewayDryRunRPC/",
                      "/jina.JinaDiscoverEndpointsRPC/", "/jina.JinaInfoRPC/")

# The user an HTTP request authenticated as, from the middleware to the streamer call
_HTTP_USER: contextvars.ContextVar[Optional[User]] = contextvars.ContextVar("crossmodal_http_user", default=None)


def bearer(value: Optional[str]) -> Optional[str]:
    """The token of ``Bearer <token>`` (a bare token is accepted too, as gRPC clients often send)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value.strip()


def with_user(parameters: Optional[Mapping[str, Any]], user: Optional[User]) -> dict:
    """Request parameters without any client value of the reserved key, plus the user if any."""
    out = {k: v for k, v in (parameters or {}).items() if k != AUTH.parameter}
    if user is not None:
        out[AUTH.parameter] = {"name": user.name, "admin": user.admin,
                               "sig": signature(user.name, user.admin, signing_key())}
    return out


class Authenticator:
    """Token checks for one gateway server; ``enabled`` False lets everyone in as nobody.

    Verified tokens are remembered by their SHA-256 for ``cache_seconds``: scrypt
    costs 10-25 ms here, as much as a whole /stats request. Only successes are kept,
    so a wrong token always costs the full check. A remembered token is still looked up
    by its id at every request (microseconds), so removing a user or rotating its token
    takes effect at once.
    """

    def __init__(self, workspace: Path, enabled: bool, settings: AuthSettings = AUTH):
        self.enabled, self.settings = enabled, settings
        self._users = Users(workspace, read_only=True, settings=settings) if enabled else None
        self._verified: dict[bytes, tuple[float, User]] = {}

    @classmethod
    def from_env(cls) -> Authenticator:
        """The gateway process reads what crossmodal/serve/flow.py put into the Flow's environment."""
        enabled = os.environ.get("CROSSMODAL_AUTH", "0") == "1"
        return cls(Path(os.environ.get("CROSSMODAL_WORKSPACE", "workspace")), enabled)

    async def user(self, token: Optional[str]) -> Optional[User]:
        """The token's user or None; scrypt runs off the event loop so other requests go on."""
        key = hashlib.sha256((token or "").encode()).digest()
        now = time.monotonic()
        cached = self._verified.get(key)
        if cached and cached[0] > now:
            if self._users.holder(token) == cached[1]:  # not removed, its token not rotated
                return cached[1]
            del self._verified[key]
        user = await asyncio.to_thread(self._users.verify, token)
        if user is not None:
            if len(self._verified) >= self.settings.cache_entries:
                self._verified.clear()
            self._verified[key] = (now + self.settings.cache_seconds, user)
        return user


# -- HTTP ------------------------------------------------------------------------------
class HTTPAuthMiddleware:
    """ASGI middleware: requests that need a token get 401 without one; others pass on
    with the user in a context variable that ``guard_streamer`` reads."""

    def __init__(self, app, authenticator: Authenticator):
        self.app, self.auth = app, authenticator

    async def __call__(self, scope, receive, send):
        user = None
        if scope["type"] == "http" and self.auth.enabled and scope["method"] not in OPEN_HTTP_METHODS:
            header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
            user = await self.auth.user(bearer(header))
            if user is None:
                return await send_json(scope, send, 401, {"detail": REFUSED}, ((b"www-authenticate", b"Bearer"),))
        reset = _HTTP_USER.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            _HTTP_USER.reset(reset)


def guard_streamer(streamer) -> None:
    """Every request the HTTP app sends into the Flow gets its parameters from ``with_user``,
    and goes through every executor: a client-chosen ``target_executor`` (a regex) could
    send documents with embeddings of its own straight to the indexer."""
    for name in ("stream_docs", "stream_doc", "stream"):
        original = getattr(streamer, name)

        def guarded(*args, _original=original, parameters=None, **kwargs):
            if "target_executor" in kwargs:
                kwargs["target_executor"] = None
            return _original(*args, parameters=with_user(parameters, _HTTP_USER.get()), **kwargs)

        setattr(streamer, name, guarded)


def add_http_auth(app, streamer, authenticator: Authenticator):
    app.add_middleware(HTTPAuthMiddleware, authenticator=authenticator)
    guard_streamer(streamer)
    return app


# -- gRPC ------------------------------------------------------------------------------
class GRPCAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses data calls without a valid ``authorization`` metadata entry, and sets the
    acting user into every request of the calls it lets through (dropping any target executor)."""

    def __init__(self, authenticator: Authenticator):
        self.auth = authenticator

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_GRPC_SERVICES):
            return handler
        user, still = None, None
        if self.auth.enabled:
            metadata = {key: value for key, value in (details.invocation_metadata or ())}
            token = bearer(metadata.get("authorization"))
            user = await self.auth.user(token)
            if user is None:
                return _rewrap(handler, _refusing)

            async def still() -> bool:  # a stream's later requests: the token may have been revoked since
                return await self.auth.user(token) == user
        return _rewrap(handler, lambda behaviour, streaming_in, streaming_out:
                       _setting_user(behaviour, streaming_in, streaming_out, user, still))


def _rewrap(handler, wrap: Callable) -> grpc.RpcMethodHandler:
    kind = {(False, False): "unary_unary", (False, True): "unary_stream",
            (True, False): "stream_unary", (True, True): "stream_stream"}[
        (handler.request_streaming, handler.response_streaming)]
    behaviour = getattr(handler, kind)
    return handler._replace(**{kind: wrap(behaviour, handler.request_streaming, handler.response_streaming)})


async def _refuse_stream(requests, context) -> None:
    """A client still sending would see a failed send (INTERNAL), not UNAUTHENTICATED: read
    what it sends (up to ``max_refused_messages``) before refusing."""
    received = 0
    async for _ in requests:
        received += 1
        if received >= AUTH.max_refused_messages:
            break
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)


def _refusing(behaviour, streaming_in: bool, streaming_out: bool):
    async def refuse(request, context):
        if streaming_in:
            await _refuse_stream(request, context)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

    async def refuse_stream(request, context):  # the shape a response-streaming method has
        await refuse(request, context)
        yield  # never reached: abort raises

    return refuse_stream if streaming_out else refuse


def _set_user(request, user: Optional[User]):
    request.parameters = with_user(request.parameters, user)
    request.header.target_executor = ""  # the Flow routes every request, never a client (guard_streamer)
    return request


def _setting_user(behaviour, streaming_in: bool, streaming_out: bool, user: Optional[User],
                  still: Optional[Callable] = None):
    """``still``: whether the call's token still holds, asked before each later request of a
    stream (a client may keep one stream open for hours: a rotated token must stop it too)."""
    async def requests(iterator, context):
        first = True
        async for request in iterator:
            if not first and still is not None and not await still():
                await _refuse_stream(iterator, context)
            first = False
            yield _set_user(request, user)

    def arg(request, context):
        return requests(request, context) if streaming_in else _set_user(request, user)

    if streaming_out:
        async def stream_out(request, context):
            async for response in behaviour(arg(request, context), context):
                yield response
        return stream_out

    async def unary_out(request, context):
        return await behaviour(arg(request, context), context)
    return unary_out
