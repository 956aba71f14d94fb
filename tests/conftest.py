"""Database fixtures shared by the whole suite.

Every store-backed test runs on SQLite (a file in tmp_path) and on PostgreSQL (a database created
for the test and dropped after it). PostgreSQL is required: when it cannot be reached the
postgres cases fail with a message saying how to start it, unless TOLLGATE_TEST_SKIP_POSTGRES=1,
which skips them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SKIP_POSTGRES_ENV = "TOLLGATE_TEST_SKIP_POSTGRES"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A PostgreSQL URL allowed to CREATE and DROP DATABASE."""
    return os.environ.get("TOLLGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


@pytest.fixture(scope="session")
def postgres_admin_engine(postgres_admin_url: str) -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the admin URL (CREATE DATABASE cannot run in a transaction),
    checked once per session."""
    url = make_url(postgres_admin_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as error:
        engine.dispose()
        message = (f"PostgreSQL is not reachable at {url.render_as_string(hide_password=True)} "
                   f"({type(getattr(error, 'orig', None) or error).__name__}). Start it with "
                   "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, point "
                   f"TOLLGATE_TEST_POSTGRES_URL at another server, or set {SKIP_POSTGRES_ENV}=1 to skip "
                   "the PostgreSQL cases.")
        if os.environ.get(SKIP_POSTGRES_ENV) == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    yield engine
    engine.dispose()


@contextmanager
def fresh_postgres_database(admin: Engine) -> Iterator[str]:
    """Creates tollgate_test_<uuid>, yields its URL, and drops it (even with connections left open)."""
    name = f"tollgate_test_{uuid.uuid4().hex}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        # In a subdirectory that does not exist yet: the store creates it.
        yield f"sqlite:///{tmp_path / 'db' / 'tollgate.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_admin_engine")) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_admin_engine: Engine) -> Iterator[str]:
    """An empty PostgreSQL database, for tests that need PostgreSQL itself."""
    with fresh_postgres_database(postgres_admin_engine) as url:
        yield url


@pytest.fixture
def store(database_url: str):
    """A migrated store on each backend."""
    from service.store import create_store

    created = create_store(database_url)
    created.migrate()
    yield created
    created.dispose()
