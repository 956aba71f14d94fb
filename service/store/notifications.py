"""Push invalidation on PostgreSQL: every replica hears of a committed change in milliseconds.

The writing unit of work that advances the store revision also runs
`pg_notify('tollgate_revision', <new revision>)` in its transaction (unit_of_work.py), which
PostgreSQL delivers on COMMIT to every session LISTENing on the channel. Each server process keeps
one such session here: a dedicated autocommit psycopg connection (not from the SQLAlchemy pool: a
pooled connection is shared and reset, and a LISTEN must stay on one session), waited on by a
daemon thread that calls back (the composition root passes the fact cache's refresh) for each
notification that may be news.

The push only makes a replica faster: the poll (server.py, every TOLLGATE_CACHE_REFRESH_SECONDS)
stays the bound. When the connection drops (a restart, pg_terminate_backend, a lost network) the
listener says so once in the log, reconnects with a bounded backoff, and calls back once on every
(re)connect, since a notification sent while it was away is lost.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

log = logging.getLogger("tollgate.store.notifications")

# The one channel: the writer's pg_notify and the listeners' LISTEN.
REVISION_CHANNEL = "tollgate_revision"
# Set on the listener's session, so that operators (and tests) find it in pg_stat_activity.
LISTENER_APPLICATION_NAME = "tollgate-revision-listener"


class OwnRevisions:
    """The last `size` revisions this process's writes advanced the store to. Their notifications
    come back to this process's listener too, needing nothing: its caches were cleared as they
    committed. A number is added before its COMMIT and discarded if that fails, so a number another
    writer takes after a rollback is at worst passed over once (the poll still brings it)."""

    def __init__(self, size: int = 256) -> None:
        self._order: deque[int] = deque()
        self._present: set[int] = set()
        self._size = size
        self._lock = threading.Lock()

    def add(self, revision: int) -> None:
        with self._lock:
            self._order.append(revision)
            self._present.add(revision)
            while len(self._order) > self._size:
                self._present.discard(self._order.popleft())

    def discard(self, revision: int) -> None:
        with self._lock:
            self._present.discard(revision)

    def __contains__(self, revision: int) -> bool:
        with self._lock:
            return revision in self._present


class ListenerConnectionError(Exception):
    """The listener's connection failed or dropped. The message names the kind of failure only:
    driver text can quote the connection string."""


class ListenConnection(Protocol):
    """One LISTENing session, as the listener uses it (psycopg's, or a fake in tests). Every method
    but interrupt() is called on the listener's thread only; failures raise ListenerConnectionError."""

    def listen(self, channel: str) -> None: ...

    def payloads(self, timeout: float) -> Iterator[str]:
        """The payloads of the notifications that arrive, until `timeout` seconds pass."""
        ...

    def interrupt(self) -> None:
        """From another thread: makes a payloads() in progress fail at once."""
        ...

    def close(self) -> None: ...


class RevisionListener:
    """Calls `on_change` once per (re)connect and once per notification that may be news.

    `on_change` returns the revision it brought the cache to; a notification of a revision at or
    below that is skipped, so a burst of commits costs one refresh, not one per commit. So is one
    of a revision `own` says this process wrote (unit_of_work.py SqlUnitOfWork.wrote).
    `on_notification` is told of every notification received, `on_status` of the connection going
    up (True) and down (False). `pause(seconds)` waits between reconnection attempts and returns
    True when the listener is stopping (tests pass their own)."""

    def __init__(self, connect: Callable[[], ListenConnection], on_change: Callable[[], int], *,
                 own: Callable[[int], bool] | None = None, on_notification: Callable[[], None] | None = None,
                 on_status: Callable[[bool], None] | None = None,
                 initial_backoff_seconds: float = 0.5, max_backoff_seconds: float = 5.0,
                 wait_seconds: float = 5.0, pause: Callable[[float], bool] | None = None) -> None:
        self._connect = connect
        self._on_change = on_change
        self._own = own or (lambda revision: False)
        self._on_notification = on_notification or (lambda: None)
        self._on_status = on_status or (lambda up: None)
        self._initial_backoff = initial_backoff_seconds
        self._max_backoff = max_backoff_seconds
        # payloads() returns at least this often, so the stop flag is seen even without interrupt().
        self._wait_seconds = wait_seconds
        self._stopping = threading.Event()
        self._pause = pause or self._stopping.wait
        self._lock = threading.Lock()  # guards _connection between the thread and stop()
        self._connection: ListenConnection | None = None
        self._known: int | None = None  # the revision on_change last returned (None: unknown)
        self._up = False
        self._settled = threading.Event()  # set once the first attempt connected and caught up, or failed
        self._thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        """True while the connection is LISTENing."""
        return self._up

    def start(self, wait_seconds: float = 0.0) -> bool:
        """Starts the thread and waits at most `wait_seconds` for the first connection to listen
        and catch up, so that every change committed afterwards is pushed. Returns whether it is up."""
        self._thread = threading.Thread(target=self._run, name="revision-listener", daemon=True)
        self._thread.start()
        self._settled.wait(wait_seconds)
        return self._up

    def stop(self, timeout: float = 2.0) -> None:
        """Closes the connection and waits at most `timeout` seconds for the thread to end."""
        self._stopping.set()
        with self._lock:
            if self._connection is not None:
                self._connection.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the revision listener did not stop within %.1f s", timeout)

    def _run(self) -> None:
        try:
            self._listen()
        finally:
            self._settled.set()

    def _listen(self) -> None:
        delays = backoff_delays(self._initial_backoff, self._max_backoff)
        failing = False  # the loss was logged; attempts are quiet until one succeeds
        while not self._stopping.is_set():
            try:
                connection = self._connect()
            except Exception as error:  # noqa: BLE001 - logged by _failed; the thread must outlive any failure
                failing = self._failed("cannot connect", error, failing)
                self._settled.set()
                if self._pause(next(delays)):
                    return
                continue
            if not self._adopt(connection):
                return
            try:
                connection.listen(REVISION_CHANNEL)
                self._set_up(True)
                if failing:
                    log.info("revision listener connected: changes are pushed again")
                elif not self._settled.is_set():
                    log.info("revision listener up: other replicas' changes are pushed (LISTEN %s)", REVISION_CHANNEL)
                failing, delays = False, backoff_delays(self._initial_backoff, self._max_backoff)
                self._changed()  # anything committed while there was no listener
                self._settled.set()
                while not self._stopping.is_set():
                    for payload in connection.payloads(self._wait_seconds):
                        self._on_notification()
                        self._notified(_revision(payload))
            except Exception as error:  # noqa: BLE001 - logged by _failed; the thread must outlive any failure
                if self._stopping.is_set():
                    return
                failing = self._failed("lost its connection", error, failing)
                self._settled.set()
            finally:
                self._set_up(False)
                self._release(connection)
            if self._pause(next(delays)):
                return

    def _adopt(self, connection: ListenConnection) -> bool:
        """Makes `connection` the one stop() interrupts; False (and closes it) when stopping."""
        with self._lock:
            if not self._stopping.is_set():
                self._connection = connection
                return True
        _close_quietly(connection)
        return False

    def _release(self, connection: ListenConnection) -> None:
        with self._lock:
            self._connection = None
        _close_quietly(connection)

    def _notified(self, revision: int | None) -> None:
        if revision is not None and (self._own(revision) or (self._known is not None and revision <= self._known)):
            return  # this process's own write, or the cache was already brought to this revision or later
        self._changed()

    def _changed(self) -> None:
        try:
            self._known = self._on_change()
        except Exception:  # e.g. the store is unavailable: the poll keeps trying, and reports it
            self._known = None
            log.debug("refresh after a revision notification failed", exc_info=True)

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            self._on_status(up)

    def _failed(self, what: str, error: Exception, failing: bool) -> bool:
        if not failing:
            # Our own error class carries no driver text; any other is a bug, shown whole.
            expected = isinstance(error, ListenerConnectionError)
            log.warning("revision listener %s (%s); reconnecting with backoff, other replicas' changes are "
                        "seen by polling meanwhile", what, error if expected else type(error).__name__,
                        exc_info=not expected)
        return True


def backoff_delays(initial: float, limit: float) -> Iterator[float]:
    """initial, doubling each time, capped at limit: 0.5, 1, 2, 4, 5, 5, …"""
    delay = initial
    while True:
        yield min(delay, limit)
        delay = min(delay * 2, limit)


def revision_listener(url: str, on_change: Callable[[], int], *, connect_timeout: float = 5.0,
                      own: Callable[[int], bool] | None = None, on_notification: Callable[[], None] | None = None,
                      on_status: Callable[[bool], None] | None = None) -> RevisionListener:
    """A listener on the PostgreSQL database at `url` (SQLAlchemy's postgresql+psycopg://… or a
    plain postgresql://…), not started."""
    conninfo = libpq_conninfo(url)
    timeout = max(1, math.ceil(connect_timeout))  # libpq takes whole seconds

    def connect() -> ListenConnection:
        try:
            # The connection idles between notifications: keepalives make the kernel notice a peer
            # that vanished (a silent network, a host gone) within about 10 + 5 x 3 seconds.
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=timeout,
                                         application_name=LISTENER_APPLICATION_NAME, keepalives=1,
                                         keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        except psycopg.Error as error:
            raise ListenerConnectionError(_described(error)) from None
        return _PsycopgListenConnection(connection)

    return RevisionListener(connect, on_change, own=own, on_notification=on_notification, on_status=on_status)


def libpq_conninfo(url: str) -> str:
    """SQLAlchemy's URL as a libpq connection URI (password included: never log it)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class _PsycopgListenConnection:
    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def listen(self, channel: str) -> None:
        try:
            self._connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as error:
            raise ListenerConnectionError(_described(error)) from None

    def payloads(self, timeout: float) -> Iterator[str]:
        try:
            for notify in self._connection.notifies(timeout=timeout):
                yield notify.payload
        except psycopg.Error as error:
            raise ListenerConnectionError(_described(error)) from None

    def interrupt(self) -> None:
        # Shutting the socket down wakes the thread blocked on it, which then fails and closes the
        # connection itself; closing it from here could free the descriptor while that thread
        # still polls it. The duplicate is closed at once, the connection's own stays open.
        try:
            duplicate = socket.socket(fileno=os.dup(self._connection.fileno()))
        except (OSError, psycopg.Error):
            return  # already closed
        with duplicate:
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected

    def close(self) -> None:
        self._connection.close()


def _described(error: psycopg.Error) -> str:
    """The kind of failure, without the driver's text (it can quote the connection string)."""
    return f"{type(error).__name__}, SQLSTATE {error.sqlstate}" if error.sqlstate else type(error).__name__


def _revision(payload: str) -> int | None:
    try:
        return int(payload)
    except ValueError:
        return None  # not ours (anyone may NOTIFY on the channel): refresh anyway


def _close_quietly(connection: ListenConnection) -> None:
    try:
        connection.close()
    except Exception:
        log.debug("closing the revision listener's connection failed", exc_info=True)
