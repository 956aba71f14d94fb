import pytest

from tests.support.world import start_world, stop_world


@pytest.fixture
def world(database_url, tmp_path):
    """A fresh server and store for one test."""
    started = start_world(database_url, tmp_path)
    yield started
    stop_world(started)


@pytest.fixture(scope="module")
def shared_world(module_database_url, tmp_path_factory):
    """One server per module, for tests that do not change the store."""
    started = start_world(module_database_url, tmp_path_factory.mktemp("data"))
    yield started
    stop_world(started)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_database_url(request, tmp_path_factory):
    """An empty database on each backend, shared by one module."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'tollgate.db'}"
        return
    from tests.conftest import fresh_postgres_database

    with fresh_postgres_database(request.getfixturevalue("postgres_admin_engine")) as url:
        yield url
