"""The gateway side of authentication (crossmodal/serve/auth.py) and app.py's --auth default."""
import asyncio
from types import SimpleNamespace

import grpc
import pytest

import app
from crossmodal.api import identity
from crossmodal.index.users import KEY_ENV, User, Users, signature
from crossmodal.serve import auth
from crossmodal.settings import AUTH


def test_bearer_takes_the_token_of_a_bearer_header_or_a_bare_token():
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("abc") == "abc"
    assert auth.bearer("") is None and auth.bearer(None) is None


@pytest.fixture(autouse=True)
def signing_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k" * 64)


def signed(name, admin=False):
    return {"name": name, "admin": admin, "sig": signature(name, admin, ("k" * 64).encode())}


def test_client_values_of_the_reserved_parameter_are_always_dropped():
    forged = {"k": 3, AUTH.parameter: signed("root", True)}
    assert auth.with_user(forged, None) == {"k": 3}
    assert auth.with_user(forged, User("bob")) == {"k": 3, AUTH.parameter: signed("bob")}
    assert auth.with_user(None, None) == {}
    assert identity.acting_user(auth.with_user({}, User("bob")), True) == User("bob")  # what executors accept


def test_the_http_streamer_sends_the_middlewares_user_only():
    seen = []
    streamer = SimpleNamespace(**{name: (lambda *a, parameters=None, **k: seen.append((parameters, k)))
                                  for name in ("stream_docs", "stream_doc", "stream")})
    auth.guard_streamer(streamer)
    streamer.stream_docs([], parameters={AUTH.parameter: {"name": "root", "admin": True}})
    token = auth._HTTP_USER.set(User("bob"))
    try:
        streamer.stream_docs([], exec_endpoint="/search", parameters={"k": 1}, target_executor="indexer")
    finally:
        auth._HTTP_USER.reset(token)
    assert seen == [({}, {}),
                    ({"k": 1, AUTH.parameter: signed("bob")}, {"exec_endpoint": "/search", "target_executor": None})]


class FakeContext:
    def __init__(self):
        self.aborted = None

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def call(interceptor, metadata, request, method="/jina.JinaSingleDataRequestRPC/process_single_data"):
    async def behaviour(req, context):
        return req.parameters

    async def run():
        handler = grpc.unary_unary_rpc_method_handler(behaviour)
        details = SimpleNamespace(method=method, invocation_metadata=metadata)
        wrapped = await interceptor.intercept_service(lambda d: _ready(handler), details)
        context = FakeContext()
        try:
            return await wrapped.unary_unary(request, context), context
        except RuntimeError:
            return None, context

    return asyncio.run(run())


async def _ready(value):
    return value


@pytest.fixture
def authenticator(tmp_path):
    token = Users(tmp_path).add("bob")
    return auth.Authenticator(tmp_path, enabled=True), token


def test_grpc_interceptor_refuses_missing_and_wrong_tokens_alike(authenticator):
    interceptor = auth.GRPCAuthInterceptor(authenticator[0])
    request = SimpleNamespace(parameters={"k": 1})
    results = [call(interceptor, (), request), call(interceptor, (("authorization", "Bearer nope"),), request)]
    for answer, context in results:
        assert answer is None and context.aborted == (grpc.StatusCode.UNAUTHENTICATED, auth.REFUSED)


def test_grpc_interceptor_sets_the_user_and_drops_a_forged_one(authenticator):
    checker, token = authenticator
    request = SimpleNamespace(parameters={"k": 1, AUTH.parameter: {"name": "root", "admin": True}},
                              header=SimpleNamespace(target_executor="indexer"))
    answer, context = call(auth.GRPCAuthInterceptor(checker), (("authorization", f"Bearer {token}"),), request)
    assert context.aborted is None
    assert answer == {"k": 1, AUTH.parameter: signed("bob")}
    assert request.header.target_executor == ""  # the Flow routes it through every executor


def test_grpc_health_stays_open(authenticator):
    request = SimpleNamespace(parameters={})
    answer, context = call(auth.GRPCAuthInterceptor(authenticator[0]), (), request,
                           method="/grpc.health.v1.Health/Check")
    assert context.aborted is None


@pytest.mark.parametrize("argv, expected", [
    ([], False), (["--host", "127.0.0.1"], False), (["--host", "::1"], False), (["--auth"], True),
    (["--host", "0.0.0.0"], True), (["--host", "example.org"], True), (["--host", "0.0.0.0", "--no-auth"], False),
])
def test_auth_is_on_off_loopback_unless_refused(argv, expected, capsys):
    cfg = app.service_config(app.parse_args(["-t", "query", *argv]))
    assert cfg.auth is expected
    warned = "WARNING: --no-auth" in capsys.readouterr().err
    assert warned is ("--no-auth" in argv)


def test_one_shot_tasks_never_turn_auth_on():
    assert app.service_config(app.parse_args(["-t", "index", "--host", "0.0.0.0"])).auth is False


def test_verified_tokens_are_remembered_for_a_while_and_wrong_ones_never(tmp_path, monkeypatch):
    import sqlite3

    from crossmodal.index import users as users_module
    from crossmodal.index.store import DB_NAME
    from crossmodal.settings import AuthSettings

    token = Users(tmp_path).add("bob")
    cached, uncached = auth.Authenticator(tmp_path, True), auth.Authenticator(tmp_path, True, AuthSettings(cache_seconds=0))
    for checker in (cached, uncached):
        assert asyncio.run(checker.user(token)) == User("bob")
        assert asyncio.run(checker.user(token + "x")) is None
    assert len(cached._verified) == 1 and token.encode() not in str(cached._verified).encode()
    hashed = []
    monkeypatch.setattr(users_module, "_hash", lambda *a: hashed.append(1) or b"")
    assert asyncio.run(cached.user(token)) == User("bob") and not hashed  # remembered: no scrypt
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("DELETE FROM users")
    assert asyncio.run(cached.user(token)) is None  # removed: refused at once, cache or not
    assert asyncio.run(uncached.user(token)) is None


def test_a_rotated_token_is_refused_at_once_although_it_was_remembered(tmp_path):
    users = Users(tmp_path)
    old = users.add("bob", admin=True)
    checker = auth.Authenticator(tmp_path, True)
    assert asyncio.run(checker.user(old)) == User("bob", True)
    new = users.rotate("bob")
    assert asyncio.run(checker.user(old)) is None
    assert asyncio.run(checker.user(new)) == User("bob", True)
