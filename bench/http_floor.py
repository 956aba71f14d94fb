"""The HTTP floor: the token endpoint's server stack with an empty handler.

Starlette on uvicorn, served by Tollgate's own listener class (service/http/app.py `HttpListener`:
the same uvicorn settings — httptools, lifespan off, no access log, no proxy headers, no server
header, 30 s keep-alive — on a socket of its own, SO_REUSEPORT, in a thread beside the main one,
as each Tollgate worker runs it). Its one route, `POST /oauth/token`, reads the form body and
answers a constant token response of the size Tollgate's ES256 ones have, with the same headers
(`application/json`, `Cache-Control: no-store`, `Pragma: no-cache`). What wrk measures against it
is the cost of HTTP/1.1 in Python on this machine (parsing, the ASGI call, the event loop, the
client side); Tollgate's numbers against it are what granting a token costs.

Several processes may serve one port (SO_REUSEPORT): the floor of a server with as many workers.

    python -m bench.http_floor --port 58080     # serves on 127.0.0.1 until SIGTERM/SIGINT
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.affinity import pin_this_process
from service.http.app import HttpListener
from service.http.errors import NO_STORE

# A constant answer shaped like an RFC 6749 section 5.1 token response with an ES256 JWT of the
# usual length (Tollgate's are ~650 characters), so both sides send as many bytes.
_TOKEN = "e" * 36 + "." + "p" * 420 + "." + "s" * 86
ANSWER = json.dumps({"access_token": _TOKEN, "token_type": "Bearer", "expires_in": 3600,
                     "scope": "court-booking:write organization:read user:read"}, separators=(",", ":")).encode()


async def token(request: Request) -> Response:
    """Reads and parses the form (as Tollgate's endpoint does before anything else), then answers
    the constant."""
    parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    return Response(ANSWER, media_type="application/json", headers=NO_STORE)


def app() -> Starlette:
    return Starlette(routes=[Route("/oauth/token", token, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the port (127.0.0.1), shared with SO_REUSEPORT")
    parser.add_argument("--index", type=int, default=0,
                        help="which process of the floor this is: it runs on a CPU of its own, as Tollgate's "
                             "worker of that index does (service/affinity.py)")
    args = parser.parse_args(argv)
    pin_this_process(args.index)  # before the listener starts a thread, as `tollgate serve` does
    listener = HttpListener(app(), "127.0.0.1", args.port, reuse_port=True, grace_seconds=1)
    listener.start()
    print(f"HTTP floor serving on 127.0.0.1:{listener.port}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
    listener.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
