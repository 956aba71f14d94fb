"""Engine and session factory for the two supported databases: a SQLite file and PostgreSQL.

Creating an engine does not connect; the first unit of work (or migrate) does.
"""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

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


def create_sql_engine(url: str, *, pool_size: int = 5, pool_timeout: float = 5.0,
                      connect_timeout: float = 5.0) -> Engine:
    """An engine for `sqlite:///path` or `postgresql+psycopg://…`. Raises ValueError otherwise.

    `pool_size` bounds the connections this process opens (no overflow); a caller waits at most
    `pool_timeout` seconds for one.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size, pool_timeout)
    if backend == "postgresql":
        return _postgres_engine(parsed, pool_size, pool_timeout, connect_timeout)
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
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _postgres_engine(url: URL, pool_size: int, pool_timeout: float, connect_timeout: float) -> Engine:
    if url.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2, which is not installed; psycopg 3 is.
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout,
        # A connection killed by a restart or failover is noticed at checkout and replaced.
        pool_pre_ping=True,
        # libpq takes whole seconds.
        connect_args={"connect_timeout": max(1, math.ceil(connect_timeout))},
    )
