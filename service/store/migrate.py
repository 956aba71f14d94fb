"""Runs the Alembic migrations programmatically: no alembic.ini, no command line.

The only way the schema is created or changed; upgrading an up-to-date database is a no-op.

A new migration, after changing models.py (then read and clean the generated file):

    store = create_store(url); store.migrate()
    with store.engine.begin() as connection:
        alembic.command.revision(alembic_config(connection), message="…", autogenerate=True, rev_id="0002")
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from .engine import WRITE_INTENT

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Arbitrary but fixed: the PostgreSQL advisory lock that serializes replicas migrating at once.
MIGRATION_LOCK_ID = 0x7011_6A7E


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config built in code; `connection` is what env.py migrates."""
    config = Config()
    # ConfigParser interpolates '%': escape it in case the install path holds one.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the schema to `revision` in one transaction (SQLite and PostgreSQL have
    transactional DDL, so a failed migration leaves the schema as it was)."""
    with engine.connect() as connection:
        # SQLite: take the write lock at BEGIN, so a concurrent migrate waits rather than fails.
        connection.execution_options(**{WRITE_INTENT: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Building an index on a large table may take longer than a request's statement
                # timeout, and so may waiting for another replica's migration.
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                # Two replicas starting together: the second waits, then finds nothing to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            command.upgrade(alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
