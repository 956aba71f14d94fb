"""The SQL store: the only package that imports SQLAlchemy and Alembic.

    store = create_store(url)       # no connection yet
    store.migrate()                 # creates or upgrades the schema (Alembic, idempotent)
    with store.unit_of_work() as repos: ...
    store.dispose()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from .engine import create_session_factory, create_sql_engine
from .migrate import upgrade
from .unit_of_work import SqlUnitOfWork, translated_errors

__all__ = ["Store", "SqlUnitOfWork", "create_store", "default_sqlite_url"]

SQLITE_FILE_NAME = "tollgate.db"


@dataclass(frozen=True)
class Store:
    engine: Engine
    unit_of_work: SqlUnitOfWork

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Creates or upgrades the schema. Raises StoreUnavailable when the database cannot be reached."""
        with translated_errors():
            upgrade(self.engine)

    def dispose(self) -> None:
        """Closes the pooled connections."""
        self.engine.dispose()


def create_store(url: str, *, pool_size: int = 5, pool_timeout: float = 5.0, connect_timeout: float = 5.0) -> Store:
    """A store on `sqlite:///path` or `postgresql+psycopg://…`; connects lazily.
    Raises ValueError for another kind of URL."""
    engine = create_sql_engine(url, pool_size=pool_size, pool_timeout=pool_timeout, connect_timeout=connect_timeout)
    return Store(engine=engine, unit_of_work=SqlUnitOfWork(create_session_factory(engine)))


def default_sqlite_url(data_dir: Path) -> str:
    """The SQLite file used when no database URL is configured."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / SQLITE_FILE_NAME}"
