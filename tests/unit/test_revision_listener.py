"""The revision listener's own logic, on fake connections: one refresh per (re)connect and per
notification that may be news, one log line per outage, a bounded backoff, a clean stop. The
real LISTEN/NOTIFY on PostgreSQL is tests/integration/test_revision_push.py."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from service.store.notifications import (
    REVISION_CHANNEL,
    ListenConnection,
    ListenerConnectionError,
    RevisionListener,
    backoff_delays,
    libpq_conninfo,
    revision_listener,
)

_DROP = object()


class FakeConnection:
    """Delivers what the test sends(): payloads, or a drop (the connection fails)."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[object] = queue.Queue()
        self.listening: list[str] = []
        self.closed = threading.Event()

    def listen(self, channel: str) -> None:
        self.listening.append(channel)

    def payloads(self, timeout: float) -> Iterator[str]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self.inbox.get(timeout=remaining)
            except queue.Empty:
                return
            if item is _DROP:
                raise ListenerConnectionError("OperationalError, SQLSTATE 57P01")
            assert isinstance(item, str)
            yield item

    def interrupt(self) -> None:
        self.inbox.put(_DROP)

    def close(self) -> None:
        self.closed.set()


class Harness:
    """A listener whose connect() takes the next outcome the test queued (a connection, or an
    error to raise), whose refresh returns the revision the test sets, and whose pauses are recorded
    instead of slept."""

    def __init__(self) -> None:
        self.outcomes: queue.Queue[FakeConnection | Exception] = queue.Queue()
        self.revision = 1
        self.refreshes = 0
        self.refresh_fails = False
        self.notifications = 0
        self.statuses: list[bool] = []
        self.pauses: list[float] = []
        self.own: set[int] = set()
        self.listener = RevisionListener(self._connect, self._refresh, own=self.own.__contains__,
                                         on_notification=self._notified, on_status=self.statuses.append,
                                         pause=self._pause, wait_seconds=0.05)

    def _connect(self) -> ListenConnection:
        outcome = self.outcomes.get(timeout=5)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _refresh(self) -> int:
        self.refreshes += 1
        if self.refresh_fails:
            raise RuntimeError("the store is unavailable")
        return self.revision

    def _notified(self) -> None:
        self.notifications += 1

    def _pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return False

    def connection(self) -> FakeConnection:
        connection = FakeConnection()
        self.outcomes.put(connection)
        return connection


def eventually(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def harness() -> Iterator[Harness]:
    started = Harness()
    yield started
    started.listener.stop()


def test_listens_and_refreshes_once_on_connect_then_per_notification_that_may_be_news(harness):
    connection = harness.connection()
    harness.listener.start()
    eventually(lambda: harness.listener.up and harness.refreshes == 1)  # the resync on connect
    assert connection.listening == [REVISION_CHANNEL]
    harness.revision = 5
    connection.inbox.put("5")
    eventually(lambda: harness.refreshes == 2)
    for payload in ("4", "5"):  # the cache is already at revision 5: nothing to do
        connection.inbox.put(payload)
    connection.inbox.put("not-a-revision")  # someone else's NOTIFY: refresh to be safe
    eventually(lambda: harness.notifications == 4)
    eventually(lambda: harness.refreshes == 3)
    harness.revision = 6
    connection.inbox.put("6")
    eventually(lambda: harness.refreshes == 4)
    assert harness.statuses == [True]


def test_start_waits_until_listening_and_caught_up(harness):
    harness.connection()
    assert harness.listener.start(wait_seconds=5)
    assert harness.refreshes == 1


def test_start_does_not_wait_past_a_failed_first_attempt(harness):
    harness.outcomes.put(ListenerConnectionError("OperationalError"))
    started = time.monotonic()
    assert not harness.listener.start(wait_seconds=5)
    assert time.monotonic() - started < 1
    harness.connection()  # and it keeps trying
    eventually(lambda: harness.listener.up)


def test_the_echo_of_this_process_own_write_is_passed_over(harness):
    connection = harness.connection()
    harness.listener.start(wait_seconds=5)
    harness.own.add(7)  # its caches were cleared as it committed
    connection.inbox.put("7")
    harness.revision = 8
    connection.inbox.put("8")  # another writer's
    eventually(lambda: harness.notifications == 2 and harness.refreshes == 2)
    time.sleep(0.05)
    assert harness.refreshes == 2


def test_a_failing_refresh_keeps_the_connection_and_the_next_notification_refreshes(harness):
    connection = harness.connection()
    harness.refresh_fails = True
    harness.listener.start()
    eventually(lambda: harness.refreshes == 1)
    harness.refresh_fails = False
    connection.inbox.put("1")  # not skipped: the failed refresh left the revision unknown
    eventually(lambda: harness.refreshes == 2)
    assert harness.listener.up and not connection.closed.is_set() and harness.pauses == []


def test_a_dropped_connection_is_logged_once_and_retried_with_a_bounded_backoff(harness, caplog):
    first = harness.connection()
    harness.listener.start()
    eventually(lambda: harness.refreshes == 1)
    for _ in range(6):  # the database stays away for six attempts
        harness.outcomes.put(ListenerConnectionError("OperationalError"))
    second = harness.connection()
    with caplog.at_level(logging.INFO, logger="tollgate.store.notifications"):
        first.inbox.put(_DROP)
        eventually(lambda: harness.listener.up and harness.refreshes == 2)  # resynced on reconnect
    assert first.closed.is_set() and second.listening == [REVISION_CHANNEL]
    assert harness.pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost its connection" in warnings[0].getMessage()
    assert any("pushed again" in r.getMessage() for r in caplog.records)
    assert harness.statuses == [True, False, True]

    harness.connection()  # a second outage starts the backoff over
    second.inbox.put(_DROP)
    eventually(lambda: harness.refreshes == 3)
    assert harness.pauses[7:] == [0.5]


def test_stop_closes_the_connection_and_ends_the_thread(harness):
    connection = harness.connection()
    harness.listener.start()
    eventually(lambda: harness.listener.up)
    started = time.monotonic()
    harness.listener.stop(timeout=2)
    assert time.monotonic() - started < 1
    assert connection.closed.is_set() and not harness.listener.up and harness.statuses == [True, False]
    assert not [t for t in threading.enumerate() if t.name == "revision-listener"]


def test_stop_while_waiting_to_reconnect_ends_the_thread_at_once():
    attempts: list[float] = []

    def connect() -> ListenConnection:
        attempts.append(time.monotonic())
        raise ListenerConnectionError("OperationalError")

    listener = RevisionListener(connect, lambda: 1, initial_backoff_seconds=10)  # the real pause
    listener.start()
    eventually(lambda: len(attempts) == 1)
    started = time.monotonic()
    listener.stop(timeout=2)
    assert time.monotonic() - started < 1 and len(attempts) == 1
    assert not [t for t in threading.enumerate() if t.name == "revision-listener"]


def test_backoff_doubles_up_to_the_limit():
    delays = backoff_delays(0.5, 5.0)
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_sqlalchemy_url_becomes_a_libpq_uri_with_its_password():
    assert libpq_conninfo("postgresql+psycopg://tollgate:p%40ss%2Fw@db.internal:6432/tollgate?sslmode=require") \
        == "postgresql://tollgate:p%40ss%2Fw@db.internal:6432/tollgate?sslmode=require"


def test_a_refused_connection_is_logged_without_the_url_or_its_password(caplog):
    from tests.support.processes import free_port

    url = f"postgresql+psycopg://tollgate:hunter2-secret@127.0.0.1:{free_port()}/tollgate"  # nobody listens
    listener = revision_listener(url, lambda: 1, connect_timeout=1)
    with caplog.at_level(logging.DEBUG, logger="tollgate.store.notifications"):
        listener.start()
        eventually(lambda: any("cannot connect" in r.getMessage() for r in caplog.records))
        listener.stop()
    assert "OperationalError" in caplog.text
    assert "hunter2-secret" not in caplog.text and "127.0.0.1" not in caplog.text


def test_the_push_settings():
    from service.config import ConfigError, load_settings

    assert load_settings(environ={}).revision_push
    assert not load_settings(environ={"TOLLGATE_REVISION_PUSH": "off"}).revision_push
    with pytest.raises(ConfigError, match="TOLLGATE_REVISION_PUSH"):
        load_settings(environ={"TOLLGATE_REVISION_PUSH": "sometimes"})
    with pytest.raises(ConfigError, match="revision_listen_url"):
        load_settings(environ={"TOLLGATE_REVISION_LISTEN_URL": "mysql://tollgate@db/tollgate"})
    database = "postgresql+psycopg://tollgate:hunter2-secret@pgbouncer:6432/tollgate"
    direct = "postgresql://tollgate:hunter2-secret@db:5432/tollgate"
    assert load_settings(environ={"TOLLGATE_DATABASE_URL": database}).effective_revision_listen_url == database
    settings = load_settings(environ={"TOLLGATE_DATABASE_URL": database, "TOLLGATE_REVISION_LISTEN_URL": direct})
    assert settings.effective_revision_listen_url == direct
    assert "hunter2-secret" not in repr(settings)
