"""A TCP proxy in front of PostgreSQL that a test can cut or stall, to fake a network fault.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url_for(postgres_url)   # the same database, through the proxy
        proxy.cut()       # every open connection is closed both ways; new ones are closed at once
        proxy.stall()     # connections stay open but no byte moves (a hung network); new ones are
                          # accepted and left hanging: the client never hears back
        proxy.restore()   # forwarding again (connections stalled meanwhile resume where they were)

One thread accepts; each connection has two pump threads (one per direction), so the thread count
is bounded by 1 + 2 × max_connections; connections beyond that are closed at once. close() (or
leaving the `with`) closes every socket and joins every thread.
"""

from __future__ import annotations

import selectors
import socket
import threading

from sqlalchemy.engine import make_url

FORWARD, CUT, STALL = "forward", "cut", "stall"
_POLL_SECONDS = 0.05
_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, max_connections: int = 64) -> None:
        self._target = (target_host, target_port)
        self._max_connections = max_connections
        self._mode = FORWARD
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._pairs: set[_Pair] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0  # connections accepted so far (a test can see the pool reconnect)
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True)
        self._acceptor.start()

    # -- what tests use ----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def url_for(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by the proxy's."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def cut(self) -> None:
        self._set_mode(CUT)
        for pair in self._snapshot():
            pair.close()

    def stall(self) -> None:
        self._set_mode(STALL)

    def restore(self) -> None:
        self._set_mode(FORWARD)

    @property
    def open_connections(self) -> int:
        return len(self._snapshot())

    def thread_count(self) -> int:
        """The proxy's live threads (the acceptor and the pumps)."""
        return 1 + sum(pair.live_threads() for pair in self._snapshot())

    def close(self) -> None:
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        self._acceptor.join(timeout=5)
        self._listener.close()
        pairs = self._snapshot()
        for pair in pairs:
            pair.close()
        for pair in pairs:
            pair.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ------------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def _snapshot(self) -> list[_Pair]:
        with self._changed:
            return [pair for pair in self._pairs if not pair.closed]

    def _wait_while_stalled(self) -> bool:
        """Blocks while the proxy stalls; False once it is closing or cut."""
        with self._changed:
            while self._mode == STALL and not self._closing.is_set():
                self._changed.wait(_POLL_SECONDS)
            return self._mode == FORWARD and not self._closing.is_set()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            with self._changed:
                self._pairs = {pair for pair in self._pairs if not pair.closed}
                refuse = self._mode == CUT or len(self._pairs) >= self._max_connections
            if refuse:
                _close(client)
                continue
            pair = _Pair(self, client)
            with self._changed:
                self._pairs.add(pair)
            pair.start()


class _Pair:
    """One client connection and its connection to the target, pumped both ways."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self._proxy = proxy
        self._client = client
        self._server: socket.socket | None = None
        self._lock = threading.Lock()
        self.closed = False
        self._threads = [threading.Thread(target=self._run, name="tcp-proxy-pump", daemon=True)]

    def start(self) -> None:
        self._threads[0].start()

    def live_threads(self) -> int:
        return sum(thread.is_alive() for thread in list(self._threads))

    def join(self, timeout: float) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for sock in (self._client, self._server):
                if sock is not None:
                    _close(sock)

    def _run(self) -> None:
        # A stalled proxy accepts but does not even connect onwards: the client's startup
        # packet goes nowhere. Connect only once forwarding.
        if not self._proxy._wait_while_stalled():
            self.close()
            return
        try:
            server = socket.create_connection(self._proxy._target, timeout=5)
        except OSError:
            self.close()
            return
        with self._lock:
            if self.closed:
                _close(server)
                return
            self._server = server
            back = threading.Thread(target=self._pump, args=(server, self._client), name="tcp-proxy-pump",
                                    daemon=True)
            self._threads.append(back)
        back.start()
        self._pump(self._client, server)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(source, selectors.EVENT_READ)
            while not self.closed:
                # While stalled nothing is read, so nothing is forwarded: the kernel buffers fill
                # and the peer just waits.
                if not self._proxy._wait_while_stalled():
                    break
                if not selector.select(_POLL_SECONDS):
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    break
                if not self._proxy._wait_while_stalled():  # stalled after reading: hold the bytes
                    break
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            selector.close()
            self.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
