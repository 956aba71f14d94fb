"""A writing unit of work on PostgreSQL notifies the new store revision on tollgate_revision, on
COMMIT only, and remembers it as this process's own; SQLite notifies nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from service.domain.model import PartnerRecord, PartnerStatus
from service.store.notifications import REVISION_CHANNEL, OwnRevisions, libpq_conninfo

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def add_partner(store, partner_id: str) -> None:
    with store.unit_of_work() as repos:
        repos.partners.add(PartnerRecord(partner_id, partner_id.title(), PartnerStatus.ACTIVE, (), (), T0))


@pytest.fixture
def listening(postgres_url) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_conninfo(postgres_url), autocommit=True) as connection:
        connection.execute(f"LISTEN {REVISION_CHANNEL}")
        yield connection


def payloads(connection: psycopg.Connection, timeout: float = 0.3) -> list[str]:
    return [notify.payload for notify in connection.notifies(timeout=timeout)]


@pytest.mark.postgres
def test_a_commit_notifies_its_revision_and_nothing_else_does(postgres_url, listening):
    from service.store import create_store

    store = create_store(postgres_url)
    try:
        store.migrate()
        assert payloads(listening) == []  # migrating is no change of facts
        add_partner(store, "acme")
        revision = store.unit_of_work.revision()
        assert payloads(listening) == [str(revision)]
        assert store.unit_of_work.wrote(revision) and not store.unit_of_work.wrote(revision + 1)

        with pytest.raises(RuntimeError), store.unit_of_work() as repos:  # rolled back: no notification
            repos.partners.add(PartnerRecord("globex", "Globex", PartnerStatus.ACTIVE, (), (), T0))
            raise RuntimeError("abandoned")
        with store.unit_of_work(read_only=True) as repos:
            repos.partners.get("acme")
        with store.unit_of_work(changes_facts=False):
            pass
        assert payloads(listening) == []
        assert store.unit_of_work.revision() == revision
    finally:
        store.dispose()


def test_sqlite_remembers_no_revisions(tmp_path):
    from service.store import create_store

    store = create_store(f"sqlite:///{tmp_path / 'tollgate.db'}")
    try:
        store.migrate()
        add_partner(store, "acme")
        assert not store.unit_of_work.wrote(store.unit_of_work.revision())
    finally:
        store.dispose()


def test_own_revisions_keep_the_latest_and_forget_a_discarded_one():
    own = OwnRevisions(size=3)
    for revision in range(1, 6):
        own.add(revision)
    assert [r for r in range(1, 6) if r in own] == [3, 4, 5]
    own.discard(4)
    assert 4 not in own and 5 in own
