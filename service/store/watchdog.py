"""A bound on how long a request may wait on a PostgreSQL connection that gives no answer.

libpq has no read timeout. When the network hangs (packets vanish, or a proxy or load balancer in
between stops forwarding while still acknowledging TCP), a query's read waits forever: the server
never saw the query, so statement_timeout cannot fire, and TCP keepalives and tcp_user_timeout
see nothing wrong while something still answers at the TCP level. Every such request would hold
one pool connection and one RPC worker thread for good, and the health watcher, stuck the same
way, would keep reporting SERVING.

So every connection a unit of work checks out is watched: if it is still checked out `limit`
seconds later, its socket is shut down (both ways). The blocked read then ends at once with a
connection error, the pool discards the connection, and the request fails with StoreUnavailable.
Units of work are short (a few indexed statements); statement_timeout (a little shorter) ends
slow statements on the server first, so only a hung network reaches this bound.

The watchdog keeps its own duplicate of each connection's socket descriptor, taken when the
connection is opened, so it never shuts down a descriptor number that libpq has closed and the
process has reused for something else.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event

log = logging.getLogger("tollgate.store")

_SOCKET = "tollgate_watchdog_socket"


class ConnectionWatchdog:
    def __init__(self, limit_seconds: float) -> None:
        self.limit = limit_seconds
        self.cut_count = 0  # connections cut so far (for tests and the log)
        self._local = threading.local()
        self._watched: dict[int, tuple[float, socket.socket]] = {}  # id(record) -> (deadline, socket)
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- the unit of work says when its checkouts are to be watched ---------------------------

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Checkouts made by this thread inside the block are watched, against one deadline
        `limit` seconds after the first: a connection replaced on checkout (dead, or cut while
        pinged) does not start the clock again."""
        outer = (getattr(self._local, "on", False), getattr(self._local, "deadline", None))
        self._local.on, self._local.deadline = True, None
        try:
            yield
        finally:
            self._local.on, self._local.deadline = outer

    # -- pool events (see install) -----------------------------------------------------------

    def on_connect(self, dbapi_connection, record) -> None:
        try:
            record.info[_SOCKET] = socket.socket(fileno=_dup(dbapi_connection.fileno()))
        except (OSError, AttributeError, ValueError):
            record.info.pop(_SOCKET, None)  # not watchable (no socket): nothing to cut

    def on_checkout(self, record) -> None:
        sock = record.info.get(_SOCKET)
        if sock is None or not getattr(self._local, "on", False):
            return
        deadline = self._local.deadline
        if deadline is None:
            deadline = self._local.deadline = time.monotonic() + self.limit
        with self._wake:
            first = not self._watched
            self._watched[id(record)] = (deadline, sock)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="store-watchdog", daemon=True)
                self._thread.start()
            elif first:
                self._wake.notify()

    def on_checkin(self, record) -> None:
        if self._watched:  # unlocked peek: the common case of nothing watched costs no lock
            with self._wake:
                self._watched.pop(id(record), None)

    def on_close(self, record) -> None:
        self.on_checkin(record)
        sock = record.info.pop(_SOCKET, None)
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the watching thread -----------------------------------------------------------------

    def _run(self) -> None:
        with self._wake:
            while not self._stopped:
                now = time.monotonic()
                for key, (deadline, sock) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[key]
                        self._cut(sock)
                if not self._watched:
                    self._wake.wait()
                else:
                    self._wake.wait(max(0.01, min(d for d, _ in self._watched.values()) - now))

    def _cut(self, sock: socket.socket) -> None:
        self.cut_count += 1
        log.warning("a database connection gave no answer for %.1f s: cutting it", self.limit)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the other side


def install(engine: Engine, watchdog: ConnectionWatchdog) -> None:
    """Hooks the watchdog into an engine's pool events (checkout is the engine's own listener,
    which must register the connection before it pings it)."""
    event.listen(engine, "connect", watchdog.on_connect)
    event.listen(engine, "checkin", lambda _dbapi, record: watchdog.on_checkin(record))
    event.listen(engine, "invalidate", lambda _dbapi, record, _error: watchdog.on_close(record))
    event.listen(engine, "close", lambda _dbapi, record: watchdog.on_close(record))


def _dup(fd: int) -> int:
    if fd < 0:
        raise ValueError("no socket")
    return os.dup(fd)
