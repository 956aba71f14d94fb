"""Engine and session factory for the two supported databases: a SQLite file and PostgreSQL.

Creating an engine does not connect; the first unit of work (or migrate) does.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from .watchdog import ConnectionWatchdog, install

# Execution option a unit of work sets on its connection when it will write. SQLite then starts
# the transaction with BEGIN IMMEDIATE (takes the write lock up front, so concurrent writers wait
# on busy_timeout instead of failing when a read transaction tries to upgrade).
WRITE_INTENT = "tollgate_write_intent"

SQLITE_PRAGMAS = (
    # busy_timeout first: switching the journal mode itself may have to wait for another connection.
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    # Safe with WAL (no corruption on power loss, at worst the last commits are lost) and much faster.
    "PRAGMA synchronous=NORMAL",
)


def create_sql_engine(url: str, *, pool_size: int = 5, pool_timeout: float = 5.0, connect_timeout: float = 5.0,
                      statement_timeout: float = 0.0, watchdog: ConnectionWatchdog | None = None) -> Engine:
    """An engine for `sqlite:///path` or `postgresql+psycopg://…`. Raises ValueError otherwise.

    `pool_size` bounds the connections this process opens (no overflow); a caller waits at most
    `pool_timeout` seconds for one. On PostgreSQL a statement runs at most `statement_timeout`
    seconds (0: no limit) and `watchdog`, if given, cuts connections that hang (see watchdog.py).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size, pool_timeout)
    if backend == "postgresql":
        return _postgres_engine(parsed, pool_size, pool_timeout, connect_timeout, statement_timeout, watchdog)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///… or postgresql+psycopg://…")


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Records are built from rows inside the unit of work; nothing needs reloading after commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


def _sqlite_engine(url: URL, pool_size: int, pool_timeout: float) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        # An in-memory database is private to one connection: the pool would scatter the data.
        raise ValueError("SQLite needs a database file: sqlite:///path/to/tollgate.db")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout,
        # Pooled connections move between the server's worker threads.
        connect_args={"check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # The sqlite3 module's own transaction handling skips BEGIN before SELECT and SAVEPOINT (see the
    # SQLAlchemy SQLite docs); turn it off and emit BEGIN ourselves in _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    writes = connection.get_execution_options().get(WRITE_INTENT, False)
    # On the driver's connection: SQLAlchemy's statement machinery would cost more than the BEGIN.
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if writes else "BEGIN")  # type: ignore[union-attr]  # a checked-out connection has one


def _postgres_engine(url: URL, pool_size: int, pool_timeout: float, connect_timeout: float,
                     statement_timeout: float, watchdog: ConnectionWatchdog | None) -> Engine:
    if url.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2, which is not installed; psycopg 3 is.
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, object] = {
        # libpq takes whole seconds; it bounds the TCP connect and the startup exchange.
        "connect_timeout": max(1, math.ceil(connect_timeout)),
        # The kernel notices a peer that vanished (an idle pooled connection to a host that went
        # away dies instead of waiting for the next query) ...
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 5, "keepalives_count": 3,
    }
    if statement_timeout > 0:
        # ... the server cancels a statement that runs too long (lock waits included) ...
        connect_args["options"] = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
        # ... and data we sent that nobody acknowledges fails the connection.
        connect_args["tcp_user_timeout"] = max(1, round((statement_timeout + 1) * 1000))
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout,
                           connect_args=connect_args)
    if watchdog is not None:
        install(engine, watchdog)
    # Instead of pool_pre_ping, which runs before the checkout event and so before the watchdog
    # could watch it: a connection killed by a restart or failover is noticed here and replaced.
    event.listen(engine, "connect", _mark_fresh)
    event.listen(engine, "checkout", functools.partial(_ping_on_checkout, engine.dialect, watchdog))
    return engine


_FRESH = "tollgate_fresh"
_unpinged = threading.local()


@contextmanager
def checked_by_first_statement() -> Iterator[None]:
    """Checkouts made by this thread inside the block are not pinged: the caller's first statement
    checks the connection instead (one round trip, not two), and on a dead connection it retries
    once on a new one (service/store/fact_reads.py: a reading writes nothing, so a retry is safe)."""
    _unpinged.on = True
    try:
        yield
    finally:
        _unpinged.on = False


def _mark_fresh(_dbapi_connection, record) -> None:
    record.info[_FRESH] = True


def _ping_on_checkout(dialect, watchdog: ConnectionWatchdog | None, dbapi_connection, record, _proxy) -> None:
    if watchdog is not None:
        watchdog.on_checkout(record)
    if record.info.pop(_FRESH, False) or getattr(_unpinged, "on", False):
        return  # just connected, or the caller checks: nothing to check here
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as error:
        # The pool invalidates this connection and checks out a new one (once).
        raise sa_exc.DisconnectionError("the pooled connection is dead") from error
