"""Answers sent by the ASGI layers that run before Jina's app (size guard, token check).

Those layers sit outside the CORS middleware that the Flow's ``cors: true`` installs,
so their refusals would reach a page on another origin as an opaque network error
instead of a 401/413 it can show. The gateway allows every origin, as that middleware
does; the header is added only when the request names one.
"""
from __future__ import annotations

import json


async def send_json(scope, send, status: int, body: dict, headers: tuple = ()) -> None:
    payload = json.dumps(body).encode()
    cors = [(b"access-control-allow-origin", b"*")] if dict(scope.get("headers") or ()).get(b"origin") else []
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *cors, *headers]})
    await send({"type": "http.response.body", "body": payload})
