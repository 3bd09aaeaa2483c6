"""The Flow's gateway: Jina's own gRPC and HTTP servers, plus the web page on the HTTP port.

Jina has no option to serve static files, and a separate web server would need its
own port, process and CORS set-up. Instead the HTTP server keeps Jina's FastAPI app
(every endpoint, ``/docs``, the ``GET /`` health check) and gains ``/ui/``, served
from the repository's ``ui/`` folder. Loaded by the Flow YAML through ``py_modules``,
so it puts the repository on ``sys.path`` itself for the one ``crossmodal`` module it
uses (``crossmodal.serve.auth``, light: no torch).
"""
import sys
from pathlib import Path

from jina.enums import ProtocolType
from jina.parsers.helper import _get_gateway_class
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from crossmodal.serve.auth import Authenticator, GRPCAuthInterceptor, add_http_auth  # noqa: E402

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
UI_PATH = "/ui"


def add_ui(app, ui_dir: Path = UI_DIR, path: str = UI_PATH):
    """Mount the page on a FastAPI app and send browsers that open ``/`` to it.

    ``GET /`` stays Jina's JSON health check for every client but a browser (one that
    asks for HTML), so readiness probes and ``Flow`` start-up checks are unaffected.
    """
    from starlette.responses import RedirectResponse
    from starlette.staticfiles import StaticFiles

    if not (ui_dir / "index.html").is_file():
        raise FileNotFoundError(f"ui_dir: {ui_dir} has no index.html")
    app.mount(path, StaticFiles(directory=ui_dir, html=True), name="ui")

    @app.middleware("http")
    async def browsers_to_ui(request, call_next):
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.method == "GET" and request.url.path == "/" and wants_html:
            return RedirectResponse(f"{path}/")
        return await call_next(request)

    return app


class UIHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway with the web page added; usable alone for HTTP-only Flows."""

    @property
    def app(self):
        return add_ui(super().app)


class AuthHTTPGateway(UIHTTPGateway):
    """Checks tokens and sets the acting user (crossmodal/serve/auth.py)."""

    @property
    def app(self):
        return add_http_auth(super().app, self._request_handler.streamer, Authenticator.from_env())


class AuthGRPCGateway(GRPCGateway):
    """Checks the ``authorization`` metadata and sets the acting user (crossmodal/serve/auth.py)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        interceptors = list(self.grpc_tracing_server_interceptors or [])
        self.grpc_tracing_server_interceptors = [GRPCAuthInterceptor(Authenticator.from_env()), *interceptors]


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
        self.servers = [server_class(args["runtime_args"]["protocol"])(**args) for args in self._server_kwargs]
        self.gateways = self.servers  # the name Jina's older code reads
