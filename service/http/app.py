"""The HTTP application (Starlette) and its listener (uvicorn on a socket of our own, in a thread
beside the gRPC server, one per worker process)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..domain.policy import Policy
from ..telemetry import Telemetry
from ..usecases.tokens import TokenService
from .errors import json_response
from .rfc6749 import TokenEndpoint
from .rfc7009 import RevocationEndpoint
from .rfc7662 import IntrospectionEndpoint
from .rfc8414 import (
    INTROSPECTION_PATH,
    JWKS_PATH,
    METADATA_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    JwksEndpoint,
    MetadataEndpoint,
)

log = logging.getLogger("tollgate.http")


def oauth_app(tokens: TokenService, policy: Callable[[], Policy], realm: str, telemetry: Telemetry) -> Starlette:
    def endpoint(kind):
        return kind(tokens, policy, realm, telemetry).handle

    routes = [
        Route(TOKEN_PATH, endpoint(TokenEndpoint), methods=["POST"]),
        Route(REVOCATION_PATH, endpoint(RevocationEndpoint), methods=["POST"]),
        Route(INTROSPECTION_PATH, endpoint(IntrospectionEndpoint), methods=["POST"]),
        Route(METADATA_PATH, endpoint(MetadataEndpoint), methods=["GET"]),
        Route(JWKS_PATH, endpoint(JwksEndpoint), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    # Paths are exact: "/oauth/token/" is a 404 like any unknown path, not Starlette's 307 to the
    # path without the slash, whose Location is built from the client-sent Host header (a client
    # following it would re-send its body, client secret included, to that host).
    app.router.redirect_slashes = False
    return app


async def _http_exception(request: Request, error: Exception) -> Response:
    """Unknown paths and wrong methods, in the same JSON shape as every other answer."""
    status = error.status_code if isinstance(error, HTTPException) else 500
    headers = dict(error.headers or {}) if isinstance(error, HTTPException) else {}
    description = "no such endpoint" if status == 404 else "method not allowed" if status == 405 else "bad request"
    return json_response({"error": "invalid_request", "error_description": description}, status, headers)


class HttpListener:
    """Binds at construction (so a taken port fails the start-up step that names it), serves from
    start() on a thread of its own, and stops gracefully."""

    def __init__(self, app: Starlette, host: str, port: int, *, reuse_port: bool, grace_seconds: float) -> None:
        self._socket = _bound_socket(host, port, reuse_port)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, http="httptools", lifespan="off", log_config=None, access_log=False,
            # The client address is the peer's: a client-sent X-Forwarded-For must not choose whose
            # failed authentications it is counted with.
            proxy_headers=False, server_header=False, timeout_keep_alive=30,
            timeout_graceful_shutdown=max(1, int(grace_seconds)))
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        started = threading.Event()

        def serve() -> None:
            asyncio.run(self._serve(started))

        self._thread = threading.Thread(target=serve, name="http", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the HTTP listener did not start")

    async def _serve(self, started: threading.Event) -> None:
        task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        # uvicorn reports start-up as a flag (Server.started), not an event: poll it.
        while not self._server.started and not task.done():  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.01)
        started.set()
        await task

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._socket.close()


def _bound_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of sockets that say so, and
    # without it every keep-alive answer (headers and body written apart) waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Several worker processes bind the port; the kernel spreads connections over them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
