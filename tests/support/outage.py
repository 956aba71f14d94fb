"""Cutting a PostgreSQL database off under a running server, and letting it back."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url


class DatabaseSwitch:
    """cut(): refuse new connections to the database and end the open ones (what a server sees
    when its database goes away). restore(): accept connections again."""

    def __init__(self, admin: Engine | str, database_url: str) -> None:
        self._owns_engine = isinstance(admin, str)
        self._admin = create_engine(admin, isolation_level="AUTOCOMMIT") if isinstance(admin, str) else admin
        self._name = make_url(database_url).database

    def cut(self) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self._name}" WITH ALLOW_CONNECTIONS false'))
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                               {"n": self._name})

    def restore(self) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self._name}" WITH ALLOW_CONNECTIONS true'))

    def close(self) -> None:
        if self._owns_engine:
            self._admin.dispose()
