"""Hostile key servers: a local HTTP(S) server whose answer per path a test sets at run time, and
the hostile JWK Sets to serve from it.

    with KeyServer() as keys, KeyServer() as elsewhere:
        keys.json("/jwks", good_set().jwks, headers={"Cache-Control": "max-age=60"})
        keys.raw("/broken", b"{not json")
        keys.huge("/huge", content_length=False)        # 10 MiB, chunked
        keys.slow("/slow", interval=1.0)                 # headers at once, then a byte a second
        keys.redirect("/moved", elsewhere.url("/jwks"))  # 302 to another port
        keys.gzip_bomb("/bomb")                          # 64 KiB on the wire, 64 MiB inflated
        keys.hang_up("/gone")                            # reads the request, closes, never answers
        keys.stall("/silent")                            # reads the request, never answers
        keys.url("/jwks"), keys.url("/jwks", host="localhost")
        keys.count("/jwks"), keys.wait_for_count("/jwks", 2, timeout=5)

    ca = CertificateAuthority(tmp_path)                  # tests/support/certs.py
    with KeyServer(tls=ca.issue("keys", server=True)) as keys:   # https://127.0.0.1:PORT
        httpx.get(keys.url("/jwks"), verify=ssl.create_default_context(cafile=ca.cert))

Routes match the path without its query; an unset path answers 404. Every request is counted per
path (before it is answered) and recorded in `requests`. One thread accepts; each connection gets
its own daemon thread. Anything that streams or waits (slow, stall, huge) stops within 50 ms of
the client going away or close(); close() (or leaving the `with`) shuts every connection down and
joins every thread, each wait bounded.
"""

from __future__ import annotations

import base64
import functools
import json
import select
import socket
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .certs import Issued
from .keys import SigningKey, generate_signing_key

MiB = 1024 * 1024
_POLL_SECONDS = 0.05
_CHUNK = 64 * 1024
_IDLE_SECONDS = 10.0  # a keep-alive connection with no new request is closed after this
_JOIN_SECONDS = 5.0

Behaviour = Callable[["_Handler"], None]


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # the request target as sent, query included
    headers: Mapping[str, str]


class KeyServer:
    """A threaded HTTP server on 127.0.0.1 (HTTPS with `tls`); see the module docstring."""

    def __init__(self, *, tls: Issued | None = None, handshake_timeout: float = 5.0) -> None:
        self._routes: dict[str, Behaviour] = {}
        self._counts: Counter[str] = Counter()
        self._counted = threading.Condition()
        self.requests: list[Seen] = []
        self.errors: list[BaseException] = []  # unexpected failures inside behaviours
        self.handshake_failures = 0  # TLS handshakes that failed (e.g. the client refused the certificate)
        self.closing = threading.Event()
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(tls.cert, tls.key)
        self._server = _Server(self, handshake_timeout)
        self.port: int = self._server.server_address[1]
        self._serving = threading.Thread(target=self._server.serve_forever, args=(_POLL_SECONDS,),
                                         name="key-server", daemon=True)
        self._serving.start()

    # -- addresses and counters --------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    def url(self, path: str = "/", *, host: str = "127.0.0.1") -> str:
        """This server's URL for `path`; host="localhost" names the same server differently."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._counted:
            return self._counts[path]

    def counts(self) -> dict[str, int]:
        with self._counted:
            return dict(self._counts)

    def wait_for_count(self, path: str, count: int, timeout: float = 5.0) -> bool:
        """True once `path` has had at least `count` requests; False after `timeout` seconds."""
        with self._counted:
            return self._counted.wait_for(lambda: self._counts[path] >= count, timeout)

    def reset_counts(self) -> None:
        with self._counted:
            self._counts.clear()
            self.requests.clear()

    def open_connections(self) -> int:
        return self._server.open_connections()

    def live_threads(self) -> int:
        """Connection threads still running (the accept thread not included)."""
        return self._server.live_threads()

    # -- behaviours --------------------------------------------------------------------------

    def set(self, path: str, behaviour: Behaviour) -> None:
        """Any behaviour: a function of the request handler (see _Handler's helpers)."""
        self._routes[path] = behaviour

    def clear(self, path: str) -> None:
        self._routes.pop(path, None)

    def json(self, path: str, document: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        """A JSON document (a JWK Set, a discovery document, an error) with this status and headers."""
        self.raw(path, json.dumps(document).encode(), status=status, headers=headers)

    def raw(self, path: str, body: bytes, *, status: int = 200, content_type: str = "application/json",
            headers: Mapping[str, str] | None = None) -> None:
        """These exact bytes (e.g. invalid JSON) as the body."""
        self.set(path, lambda h: h.answer(status, body, {"Content-Type": content_type, **(headers or {})}))

    def huge(self, path: str, size: int = 10 * MiB, *, content_length: bool = True,
             headers: Mapping[str, str] | None = None) -> None:
        """A `size`-byte body, streamed in 64 KiB chunks: with Content-Length, or chunked without
        it. The body is a JWK Set padded with spaces, so it is valid JSON: only a size limit stops it."""
        def behaviour(h: _Handler) -> None:
            h.start(200, {"Content-Type": "application/json", **(headers or {})},
                    length=size if content_length else None)
            h.stream(_padded_chunks(size))
        self.set(path, behaviour)

    def slow(self, path: str, *, interval: float = 1.0, body: bytes | None = None) -> None:
        """Status and headers (with the full Content-Length) at once, then one byte of the body
        every `interval` seconds: by default a JSON document 3,600 bytes long (an hour at 1 s)."""
        body = body if body is not None else _padded_document(3600)

        def behaviour(h: _Handler) -> None:
            h.start(200, {"Content-Type": "application/json"}, length=len(body))
            for index in range(len(body)):
                if not h.wait(interval):
                    return
                h.send(body[index:index + 1])
        self.set(path, behaviour)

    def redirect(self, path: str, location: str, *, status: int = 302,
                 headers: Mapping[str, str] | None = None) -> None:
        self.set(path, lambda h: h.answer(status, b"", {"Location": location, **(headers or {})}))

    def gzip_bomb(self, path: str, inflated_size: int = 64 * MiB, *, content_length: bool = True) -> None:
        """A gzip body (Content-Encoding: gzip) of about inflated_size / 1000 bytes that inflates
        to `inflated_size` bytes of valid JSON (a JWK Set padded with spaces)."""
        def behaviour(h: _Handler) -> None:
            body = _gzip_bomb(inflated_size)
            h.start(200, {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                    length=len(body) if content_length else None)
            h.stream(body[i:i + _CHUNK] for i in range(0, len(body), _CHUNK))
        self.set(path, behaviour)

    def hang_up(self, path: str, *, reset: bool = False) -> None:
        """Reads the request and closes the connection without a byte of answer (with `reset`,
        abortively: the client gets a TCP RST instead of a FIN)."""
        self.set(path, lambda h: h.hang_up(reset=reset))

    def stall(self, path: str) -> None:
        """Reads the request and never answers, until the client leaves or the server closes."""
        def behaviour(h: _Handler) -> None:
            h.wait(float("inf"))
        self.set(path, behaviour)

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        if self.closing.is_set():
            return
        self.closing.set()
        self._server.shutdown()  # serve_forever notices within _POLL_SECONDS
        self._serving.join(_JOIN_SECONDS)
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> KeyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path
        with self._counted:
            self._counts[path] += 1
            self.requests.append(Seen(handler.command, handler.path, dict(handler.headers.items())))
            self._counted.notify_all()
        behaviour = self._routes.get(path)
        if behaviour is None:
            handler.answer(404, b'{"error": "not_found"}', {"Content-Type": "application/json"})
            return
        try:
            behaviour(handler)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            handler.close_connection = True  # the client left mid-answer
        except Exception as error:  # noqa: BLE001 - kept for the test to see, never printed by a thread
            self.errors.append(error)
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    """One connection; behaviours use answer/start/send/stream/wait/hang_up."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as a real server
    timeout = _IDLE_SECONDS
    server: _Server
    _chunked = False

    def do_GET(self) -> None:  # http.server's naming
        self.server.owner._dispatch(self)

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tests read counts
        pass

    def answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.start(status, headers, length=len(body))
        self.send(body)
        self.finish_body()

    def start(self, status: int, headers: Mapping[str, str], *, length: int | None) -> None:
        """Status line and headers; `length` None means a chunked body."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self._chunked = length is None
        self.send_header(*(("Transfer-Encoding", "chunked") if self._chunked else ("Content-Length", str(length))))
        self.end_headers()
        self.wfile.flush()

    def send(self, data: bytes) -> None:
        if self.command == "HEAD" or not data:
            return
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        self.wfile.flush()

    def finish_body(self) -> None:
        if self._chunked and self.command != "HEAD":
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def stream(self, chunks) -> None:
        """Sends each chunk; stops early (closing the connection) once the server closes."""
        for chunk in chunks:
            if self.server.owner.closing.is_set():
                self.close_connection = True
                return
            self.send(chunk)
        self.finish_body()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; False as soon as the client has gone (EOF or an error on its
        socket) or the server is closing, True when the time ran out with the client still there.
        Bytes the client sends meanwhile are discarded: the connection is not reused after this."""
        self.close_connection = True
        deadline = time.monotonic() + seconds
        while not self.server.owner.closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                readable, _, _ = select.select([self.connection], [], [], min(remaining, _POLL_SECONDS))
                if readable and not self.connection.recv(4096):
                    return False
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (OSError, ValueError):
                return False
        return False

    def hang_up(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:  # linger 0, then close without shutdown: the kernel sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.server.drop(self.connection)


class _Server(ThreadingHTTPServer):
    """Tracks its connection threads and sockets itself, so close() can end them all, bounded."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: KeyServer, handshake_timeout: float) -> None:
        self.owner = owner
        self._handshake_timeout = handshake_timeout
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._connection_threads: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self._serve, args=(request, client_address), name="key-server-conn",
                                  daemon=True)
        with self._lock:
            self._connection_threads = [t for t in self._connection_threads if t.is_alive()]
            self._connection_threads.append(thread)
            self._sockets.add(request)
        thread.start()

    def _serve(self, raw: socket.socket, client_address) -> None:
        connection: socket.socket | None = raw
        try:
            if self.owner._tls is not None:
                connection = self._handshake(raw)  # None: it failed, and dropped the socket
            if connection is not None:
                _Handler(connection, client_address, self)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            pass  # the client left; nothing to answer
        except Exception as error:  # noqa: BLE001 - kept for the test to see
            self.owner.errors.append(error)
        finally:
            if connection is not None:
                self.drop(connection)

    def _handshake(self, raw: socket.socket) -> ssl.SSLSocket | None:
        raw.settimeout(self._handshake_timeout)
        try:
            wrapped = self.owner._tls.wrap_socket(raw, server_side=True)  # type: ignore[union-attr]
        except (ssl.SSLError, OSError):
            with self._lock:
                self.owner.handshake_failures += 1
            self.drop(raw)
            return None
        with self._lock:
            self._sockets.discard(raw)
            self._sockets.add(wrapped)
        return wrapped

    def drop(self, connection: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(connection)
        _close(connection)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets)

    def live_threads(self) -> int:
        with self._lock:
            return sum(thread.is_alive() for thread in self._connection_threads)

    def close_connections(self) -> None:
        with self._lock:
            sockets, threads = list(self._sockets), list(self._connection_threads)
        for connection in sockets:
            _close(connection)
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass
    connection.close()


# --- bodies ----------------------------------------------------------------------------------

_OPEN, _CLOSE = b'{"keys": [', b"]}"


def _padded_document(size: int) -> bytes:
    """`size` bytes of valid JSON: an empty JWK Set padded with spaces."""
    return _OPEN + b" " * max(0, size - len(_OPEN) - len(_CLOSE)) + _CLOSE


def _padded_chunks(size: int):
    padding = max(0, size - len(_OPEN) - len(_CLOSE))
    yield _OPEN
    spaces = b" " * _CHUNK
    while padding > 0:
        yield spaces[:min(padding, _CHUNK)]
        padding -= _CHUNK
    yield _CLOSE


@functools.lru_cache(maxsize=4)
def _gzip_bomb(inflated_size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    return b"".join([*(compressor.compress(chunk) for chunk in _padded_chunks(inflated_size)), compressor.flush()])


# --- JWK Sets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """A JWK Set to serve, and the private keys behind it (to sign tokens that name its kids)."""

    jwks: dict[str, Any]
    signers: tuple[SigningKey, ...] = field(default=())

    @property
    def signer(self) -> SigningKey:
        return self.signers[0]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def good_set(kid: str = "good-rsa") -> KeySet:
    """One RSA 2048 public key with kid, alg RS256 and use sig."""
    key = generate_signing_key("RS256", kid)
    return KeySet({"keys": [key.public_jwk()]}, (key,))


def hmac_set(kid: str = "hmac-oct") -> KeySet:
    """An `oct` key: a shared HS256 secret published for anyone to sign with."""
    key = generate_signing_key("HS256", kid)
    assert key.secret is not None
    jwk = {"kty": "oct", "kid": kid, "alg": "HS256", "use": "sig", "k": _b64url(key.secret)}
    return KeySet({"keys": [jwk]}, (key,))


def duplicate_kid_set(kid: str = "twin") -> KeySet:
    """Two different RSA keys under the same kid; either signer signs with that kid."""
    first = generate_signing_key("RS256", kid)
    second = SigningKey("RS256", kid, private_key=generate_signing_key("RS256", f"{kid}~second").private_key)
    return KeySet({"keys": [first.public_jwk(), second.public_jwk()]}, (first, second))


def encryption_key_set(kid: str = "enc-rsa") -> KeySet:
    """An RSA key marked use "enc" (and no alg, so only `use` says it is not for signatures)."""
    key = generate_signing_key("RS256", kid)
    jwk = {**key.public_jwk(), "use": "enc"}  # type: ignore[dict-item]
    jwk.pop("alg")
    return KeySet({"keys": [jwk]}, (key,))


def ec_claiming_rs256_set(kid: str = "ec-as-rs256") -> KeySet:
    """An EC P-256 key that declares alg RS256; its signer signs ES256."""
    key = generate_signing_key("ES256", kid)
    return KeySet({"keys": [{**key.public_jwk(), "alg": "RS256"}]}, (key,))  # type: ignore[dict-item]


_WEAK: dict[str, SigningKey] = {}


def weak_rsa_set(kid: str = "rsa-1024") -> KeySet:
    """A 1024-bit RSA key (alg RS256). PyJWT warns (InsecureKeyLengthWarning) when its signer signs."""
    key = _WEAK.get(kid)
    if key is None:
        key = _WEAK[kid] = SigningKey("RS256", kid, private_key=rsa.generate_private_key(65537, 1024))
    return KeySet({"keys": [key.public_jwk()]}, (key,))


def private_members_set(kid: str = "leaky-rsa") -> KeySet:
    """An RSA 2048 key published with its private members (d, p, q, dp, dq, qi)."""
    key = generate_signing_key("RS256", kid)
    jwk = dict(RSAAlgorithm.to_jwk(key.private_key, as_dict=True))
    jwk.pop("key_ops", None)
    jwk.update(kid=kid, alg="RS256", use="sig")
    return KeySet({"keys": [jwk]}, (key,))


def discovery_document(issuer: str, jwks_uri: str, **extra: Any) -> dict[str, Any]:
    """A minimal OpenID Connect discovery document; `extra` members are added (None removes one)."""
    document = {"issuer": issuer, "jwks_uri": jwks_uri, "token_endpoint": f"{issuer}/token",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], **extra}
    return {name: value for name, value in document.items() if value is not None}
