"""Bounds on waiting for PostgreSQL (tests/support/tcp_proxy.py fakes the network): a slow
statement is cancelled by the server, a hung connection is cut by the store's watchdog, and
migrations are exempt from both. PostgreSQL only: SQLite has no network and no statement timeout."""

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.domain.errors import StoreUnavailable
from service.store import create_store
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def proxy(postgres_url):
    url = make_url(postgres_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as started:
        yield started


@pytest.mark.postgres
def test_a_slow_statement_is_cancelled_by_the_server(postgres_url):
    store = create_store(postgres_url, statement_timeout=1)
    try:
        with store.engine.connect() as connection:
            started = time.monotonic()
            with pytest.raises(Exception, match="statement timeout"):
                connection.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 2.5
        store.migrate()  # exempt: a migration may take longer than a request
    finally:
        store.dispose()


@pytest.mark.postgres
def test_a_hung_connection_is_cut_and_only_for_so_long(postgres_url, proxy):
    store = create_store(proxy.url_for(postgres_url), pool_size=2, pool_timeout=0.5, connect_timeout=1,
                         statement_timeout=0.5)
    try:
        store.migrate()
        store.unit_of_work.ping()  # a pooled connection, now silent
        proxy.stall()
        results: list[tuple[str, float]] = []

        def attempt():
            started = time.monotonic()
            try:
                with store.unit_of_work(read_only=True) as repos:
                    repos.partners.list()
                results.append(("answered", time.monotonic() - started))
            except StoreUnavailable:
                results.append(("unavailable", time.monotonic() - started))

        threads = [threading.Thread(target=attempt) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads), "a unit of work hung on the network"
        assert [outcome for outcome, _ in results] == ["unavailable"] * 6
        # watchdog (2 s: at least 2) + a reconnect (connect_timeout 1 s) + waiting for the pool
        assert max(seconds for _, seconds in results) < 2 + 1 + 0.5 + 1
        assert store.watchdog is not None and store.watchdog.cut_count >= 1
        with pytest.raises(StoreUnavailable):
            store.unit_of_work.ping()

        proxy.restore()
        store.unit_of_work.ping()
        with store.unit_of_work(read_only=True) as repos:
            assert repos.partners.list() == []
    finally:
        store.dispose()
    assert not [t for t in threading.enumerate() if t.name == "store-watchdog"], "dispose stops the watchdog"
