"""Races the database must decide, and outages the store must report as StoreUnavailable.

The races run on PostgreSQL (row locks and the partial unique index) and on SQLite (writers queue
on BEGIN IMMEDIATE). Every wait is bounded, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.domain.errors import StoreUnavailable
from service.domain.model import (
    ConnectTokenRecord,
    PartnerRecord,
    PartnerStatus,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.store import create_store
from tests.support.outage import DatabaseSwitch
from tests.support.races import race as racing

THREADS = 20
NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
UNREACHABLE_URL = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"


@pytest.fixture
def racing_store(database_url):
    """A migrated store with a connection per thread, so all THREADS are inside a unit of work at once."""
    created = create_store(database_url, pool_size=THREADS, pool_timeout=30)
    created.migrate()
    with created.unit_of_work() as repos:
        for partner_id in ("acme", "globex"):
            repos.partners.add(PartnerRecord(partner_id, partner_id, PartnerStatus.ACTIVE, (), (), NOW))
    yield created
    created.dispose()


def race(action) -> list:
    return racing(action, THREADS)


def test_a_connect_token_is_claimed_by_exactly_one_of_many(racing_store):
    with racing_store.unit_of_work() as repos:
        repos.connect_tokens.add(ConnectTokenRecord("ct_1", "digest", "o-1", "platform", NOW, NOW + timedelta(hours=1)))

    def claim(i: int) -> bool:
        with racing_store.unit_of_work() as repos:
            return repos.connect_tokens.mark_used("ct_1", ("acme", "globex")[i % 2], NOW + timedelta(seconds=i))

    assert sorted(race(claim)) == [False] * (THREADS - 1) + [True]
    with racing_store.unit_of_work(read_only=True) as repos:
        assert repos.connect_tokens.find_by_digest("digest").used_at is not None


def test_one_open_relation_per_triple_however_many_insert_at_once(racing_store):
    def request(i: int) -> bool:
        with racing_store.unit_of_work() as repos:
            inserted = repos.relations.insert_open(RelationRecord(
                f"rel_{i}", "acme", SubjectType.USER, "u-1", RelationStatus.PENDING, NOW, NOW))
            # The loser's transaction stays usable: it can read the winner.
            assert repos.relations.find_open("acme", SubjectType.USER, "u-1") is not None or inserted
            return inserted

    assert sorted(race(request)) == [False] * (THREADS - 1) + [True]
    with racing_store.unit_of_work(read_only=True) as repos:
        rows, _ = repos.relations.list(RelationFilter(subject_id="u-1"), 100, "")
    assert len(rows) == 1 and rows[0].status is RelationStatus.PENDING


def test_an_exhausted_pool_is_unavailable_after_the_pool_timeout(database_url):
    small = create_store(database_url, pool_size=1, pool_timeout=0.2)
    try:
        small.migrate()
        with small.unit_of_work(read_only=True):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                with small.unit_of_work(read_only=True):
                    pass
            assert time.monotonic() - started < 5
        small.unit_of_work.ping()  # the connection came back to the pool
    finally:
        small.dispose()


@pytest.mark.parametrize("enter", [
    pytest.param(lambda store: store.unit_of_work.ping(), id="ping"),
    pytest.param(lambda store: store.unit_of_work(read_only=True).__enter__(), id="read"),
    pytest.param(lambda store: store.unit_of_work().__enter__(), id="write"),
    pytest.param(lambda store: store.migrate(), id="migrate"),
])
def test_an_unreachable_database_is_unavailable_quickly(enter):
    unreachable = create_store(UNREACHABLE_URL, connect_timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            enter(unreachable)
        assert time.monotonic() - started < 5
    finally:
        unreachable.dispose()
    error = raised.value
    assert (error.message, error.reason) == ("the store is unavailable", "store_unavailable")
    assert error.__cause__ is not None  # the driver error, for the log
    assert "s3cret" not in str(error) and "127.0.0.1" not in str(error)


@pytest.mark.postgres
def test_connections_killed_by_the_server_are_replaced(postgres_url, postgres_admin_engine):
    store = create_store(postgres_url)
    try:
        store.migrate()
        store.unit_of_work.ping()
        _terminate_backends(postgres_admin_engine, make_url(postgres_url).database)
        # pool_pre_ping notices the dead pooled connection and opens a new one.
        with store.unit_of_work(read_only=True) as repos:
            assert repos.partners.list() == []
    finally:
        store.dispose()


@pytest.mark.postgres
def test_the_store_recovers_when_the_database_comes_back(postgres_url, postgres_admin_engine):
    store = create_store(postgres_url, connect_timeout=2)
    try:
        store.migrate()
        database = DatabaseSwitch(postgres_admin_engine, postgres_url)
        database.cut()
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                with store.unit_of_work(read_only=True) as repos:
                    repos.partners.list()
            with pytest.raises(StoreUnavailable):
                store.unit_of_work.ping()
        database.restore()
        store.unit_of_work.ping()
        with store.unit_of_work(read_only=True) as repos:
            assert repos.partners.list() == []
    finally:
        store.dispose()


def _terminate_backends(admin, database: str) -> None:
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                           {"name": database})
