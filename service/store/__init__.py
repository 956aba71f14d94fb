"""The SQL store: the only package that imports SQLAlchemy and Alembic.

    store = create_store(url)       # no connection yet
    store.migrate()                 # creates or upgrades the schema (Alembic, idempotent)
    with store.unit_of_work() as repos: ...
    with store.fact_reads() as facts: ...   # the reads Check makes, without the ORM
    store.dispose()
"""

from __future__ import annotations

from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from .engine import create_session_factory, create_sql_engine
from .fact_reads import SqlFactReads
from .migrate import upgrade
from .unit_of_work import SqlUnitOfWork, translated_errors
from .watchdog import ConnectionWatchdog

__all__ = ["SqlUnitOfWork", "Store", "create_store", "default_sqlite_url"]

SQLITE_FILE_NAME = "tollgate.db"


@dataclass(frozen=True)
class Store:
    engine: Engine
    unit_of_work: SqlUnitOfWork
    # The facts Check and verification read, in Core (fact_reads.py): lighter than a unit of work.
    fact_reads: SqlFactReads
    # PostgreSQL only: cuts connections that hang (a network that stops answering).
    watchdog: ConnectionWatchdog | None = None

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Creates or upgrades the schema. Raises StoreUnavailable when the database cannot be reached."""
        with translated_errors():
            upgrade(self.engine)

    def open_connections(self, count: int) -> None:
        """Opens up to `count` pooled connections now, so that the first checks after a start do
        not each wait for a connection to be made (with PostgreSQL, a new backend process each).
        Best effort: a store that cannot be reached now is left to the first reads to report."""
        opened = []
        with suppress(Exception):  # reported by the reads that need the store
            for _ in range(count):
                opened.append(self.engine.raw_connection())
        for connection in opened:
            connection.close()

    def dispose(self) -> None:
        """Closes the pooled connections (and stops the watchdog)."""
        if self.watchdog is not None:
            self.watchdog.stop()
        self.fact_reads.close()
        self.engine.dispose()


def create_store(url: str, *, pool_size: int = 5, pool_timeout: float = 5.0, connect_timeout: float = 5.0,
                 statement_timeout: float = 0.0) -> Store:
    """A store on `sqlite:///path` or `postgresql+psycopg://…`; connects lazily.
    Raises ValueError for another kind of URL.

    On PostgreSQL a statement runs at most `statement_timeout` seconds (0, the default: no limit), and a unit of
    work that holds a connection `statement_timeout` + 1 s (at least 2 s) is presumed to hang on a
    dead network: its connection is cut and it fails with StoreUnavailable."""
    watchdog = None
    if make_url(url).get_backend_name() == "postgresql" and statement_timeout > 0:
        watchdog = ConnectionWatchdog(max(2.0, statement_timeout + 1.0))
    engine = create_sql_engine(url, pool_size=pool_size, pool_timeout=pool_timeout, connect_timeout=connect_timeout,
                               statement_timeout=statement_timeout, watchdog=watchdog)
    unit_of_work = SqlUnitOfWork(create_session_factory(engine), watchdog, notify=engine.dialect.name == "postgresql")
    fact_reads = SqlFactReads(engine, watchdog.watching if watchdog else nullcontext)
    return Store(engine=engine, unit_of_work=unit_of_work, fact_reads=fact_reads, watchdog=watchdog)


def default_sqlite_url(data_dir: Path) -> str:
    """The SQLite file used when no database URL is configured."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / SQLITE_FILE_NAME}"
