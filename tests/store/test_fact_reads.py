"""The store's Core reads of the facts (store.fact_reads) on SQLite and PostgreSQL: each gives the
record the repositories give for the same row, and the same answer for what is missing, expired,
revoked or unstorable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.domain.errors import StoreUnavailable
from service.domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RefreshFamilyRecord,
    RelationRecord,
    RelationStatus,
    RemoteKeys,
    SigningKeyRecord,
    SubjectType,
)
from service.domain.ports import ReadAgain
from service.store import create_store

T0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
USER, ORG = SubjectType.USER, SubjectType.ORGANIZATION
JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k1"}]}
UNSTORABLE = "bad\x00id"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signing_key(kid: str, created_at: datetime, **changes) -> SigningKeyRecord:
    return SigningKeyRecord(kid=kid, algorithm="ES256", private_key_sealed=f"sealed-{kid}",
                            public_jwk={"kty": "EC", "kid": kid}, created_at=created_at, **changes)


@pytest.fixture
def seeded(store):
    with store.unit_of_work() as repos:
        repos.partners.add(PartnerRecord("acme", "Acme", PartnerStatus.SUSPENDED, ("user:read",), ("reader",), T0))
        repos.api_keys.add(ApiKeyRecord("key_1", "acme", "d" * 64, "ci", ("user:write",), ("reader",),
                                        ("C-1", "C-2"), T0, expires_at=at(60).astimezone(PLUS_TWO), revoked_at=at(30)))
        repos.issuers.add(IssuerRecord("iss_1", "https://idp.test", "https://api.test", ("ES256", "RS256"), JWKS,
                                       None, True, "customer_numbers", T0))
        repos.issuers.add(IssuerRecord("iss_2", "https://remote.test", "https://api.test", ("RS256",), {"keys": []},
                                       None, False, "cn", T0, remote=RemoteKeys(
                                           "https://remote.test/jwks", "https://remote.test/.well-known", at(1), at(2),
                                           "timed out", at(3), 2)))
        repos.revoked_tokens.revoke("iss_1", "jti-1", T0, at(3600))
        repos.relations.insert_open(RelationRecord("rel_1", "acme", USER, "u-1", RelationStatus.ACTIVE, T0, at(1)))
        repos.relations.insert_open(RelationRecord("rel_2", "acme", USER, "u-2", RelationStatus.ACTIVE, T0, at(1),
                                                   expires_at=at(100)))
        repos.relations.insert_open(RelationRecord("rel_3", "acme", ORG, "o-1", RelationStatus.PENDING, T0, at(1)))
        repos.oauth_clients.add(OAuthClientRecord("cli_1", "acme", "robot", "s" * 64, ("user:read",), ("C-1",),
                                                  True, T0, secret_rotated_at=at(5)))
        repos.refresh_tokens.add_family(RefreshFamilyRecord("rtf_1", "cli_1", ("user:read",), T0, revoked_at=at(9)))
        repos.revoked_access_tokens.revoke("at-1", "cli_1", T0, at(3600))
        repos.signing_keys.add_active(signing_key("old", T0))
        repos.signing_keys.retire("old", at(10), publish_until=at(20))
        repos.signing_keys.add_active(signing_key("new", at(10)))
    return store


# Every read of domain.ports.Facts, with arguments that find something and that find nothing.
READS = [
    ("partners", "get", ("acme",)),
    ("partners", "get", ("nobody",)),
    ("partners", "get", (UNSTORABLE,)),
    ("api_keys", "find_by_digest", ("d" * 64,)),
    ("api_keys", "find_by_digest", ("e" * 64,)),
    ("api_keys", "find_by_digest", (UNSTORABLE,)),
    ("issuers", "find_by_issuer", ("https://idp.test",)),
    ("issuers", "find_by_issuer", ("https://remote.test",)),
    ("issuers", "find_by_issuer", ("https://other.test",)),
    ("issuers", "find_by_issuer", ("\ud800",)),
    ("revoked_tokens", "is_revoked", ("iss_1", "jti-1")),
    ("revoked_tokens", "is_revoked", ("iss_2", "jti-1")),
    ("revoked_tokens", "is_revoked", ("iss_1", UNSTORABLE)),
    ("relations", "find_open", ("acme", USER, "u-1")),
    ("relations", "find_open", ("acme", ORG, "o-1")),
    ("relations", "find_open", ("acme", ORG, "u-1")),
    ("relations", "find_open", (UNSTORABLE, USER, "u-1")),
    ("relations", "is_active", ("acme", USER, "u-1", at(50))),
    ("relations", "is_active", ("acme", USER, "u-2", at(99))),
    ("relations", "is_active", ("acme", USER, "u-2", at(100))),
    ("relations", "is_active", ("acme", ORG, "o-1", at(50))),
    ("relations", "is_active", ("acme", USER, UNSTORABLE, at(50))),
    ("oauth_clients", "get", ("cli_1",)),
    ("oauth_clients", "get", ("cli_2",)),
    ("refresh_tokens", "get_family", ("rtf_1",)),
    ("refresh_tokens", "get_family", ("rtf_2",)),
    ("revoked_access_tokens", "is_revoked", ("at-1",)),
    ("revoked_access_tokens", "is_revoked", ("at-2",)),
    ("signing_keys", "active", ()),
    ("signing_keys", "published", (at(15),)),
    ("signing_keys", "published", (at(20),)),
    ("signing_keys", "list", ()),
]


@pytest.mark.parametrize(("reader", "method", "arguments"), READS,
                         ids=[f"{reader}.{method}-{index}" for index, (reader, method, _) in enumerate(READS)])
def test_each_read_gives_what_the_repositories_give(seeded, reader, method, arguments):
    with seeded.fact_reads() as facts:
        read = getattr(getattr(facts, reader), method)(*arguments)
    with seeded.unit_of_work(read_only=True) as repos:
        expected = getattr(getattr(repos, reader), method)(*arguments)
    assert read == expected


@pytest.mark.parametrize(("reader", "method", "arguments"), READS,
                         ids=[f"{reader}.{method}-{index}" for index, (reader, method, _) in enumerate(READS)])
def test_each_optimistic_read_gives_what_the_consistent_one_gives(seeded, reader, method, arguments):
    with seeded.fact_reads() as facts:
        expected = getattr(getattr(facts, reader), method)(*arguments)
        revision = facts.revision()
    with seeded.fact_reads.at_revision(revision) as facts:
        read = getattr(getattr(facts, reader), method)(*arguments)
    assert read == expected


def test_an_optimistic_reading_of_a_revision_the_store_has_left_is_read_again(seeded):
    with seeded.fact_reads() as facts:
        revision = facts.revision()
    with seeded.fact_reads.at_revision(revision) as facts:
        assert facts.relations.is_active("acme", USER, "u-1", at(50))
    with seeded.unit_of_work() as repos:  # a change committed: the revision moves on
        repos.relations.transition("rel_1", RelationStatus.ACTIVE, RelationStatus.REVOKED, at(2), None)
    with pytest.raises(ReadAgain) as moved, seeded.fact_reads.at_revision(revision) as facts:
        facts.relations.is_active("acme", USER, "u-1", at(50))
        pytest.fail("a statement that saw another revision answers nothing")
    assert moved.value.revision > revision
    with seeded.fact_reads.at_revision(moved.value.revision) as facts:
        assert not facts.relations.is_active("acme", USER, "u-1", at(50))
    with pytest.raises(ReadAgain), seeded.fact_reads.at_revision(revision):
        pass  # nothing read: the revision is read at the end, and has moved on


def test_an_optimistic_reading_is_outside_any_transaction_and_leaves_none_open(seeded):
    with seeded.fact_reads() as facts:
        revision = facts.revision()
    for _ in range(3):  # the same pooled connections, given back as they were
        with seeded.fact_reads.at_revision(revision) as facts:
            assert facts.partners.get("acme").id == "acme"
        with seeded.unit_of_work() as repos:
            repos.partners.set_status("acme", PartnerStatus.ACTIVE)  # writes still commit
        with seeded.fact_reads() as facts:
            revision = facts.revision()
            assert facts.partners.get("acme").status is PartnerStatus.ACTIVE


def test_the_reads_find_what_was_written(seeded):
    with seeded.fact_reads() as facts:
        assert facts.partners.get("acme").status is PartnerStatus.SUSPENDED
        key = facts.api_keys.find_by_digest("d" * 64)
        assert (key.grants, key.customer_numbers, key.expires_at, key.revoked_at) == (
            ("user:write",), ("C-1", "C-2"), at(60), at(30))
        assert facts.issuers.find_by_issuer("https://idp.test").jwks == JWKS
        assert facts.issuers.find_by_issuer("https://remote.test").remote.failures == 2
        assert facts.revoked_tokens.is_revoked("iss_1", "jti-1") is True
        assert facts.relations.is_active("acme", USER, "u-2", at(99)) is True
        assert facts.relations.is_active("acme", USER, "u-2", at(100)) is False
        assert facts.relations.find_open("acme", ORG, "o-1").status is RelationStatus.PENDING
        assert facts.oauth_clients.get("cli_1").secret_rotated_at == at(5)
        assert facts.refresh_tokens.get_family("rtf_1").revoked_at == at(9)
        assert facts.revoked_access_tokens.is_revoked("at-1") is True
        assert facts.signing_keys.active().kid == "new"
        assert [k.kid for k in facts.signing_keys.published(at(15))] == ["new", "old"]
        assert [k.kid for k in facts.signing_keys.published(at(20))] == ["new"]
        assert [k.kid for k in facts.signing_keys.list()] == ["new", "old"]


def test_each_reading_sees_the_writes_committed_before_it(seeded):
    with seeded.fact_reads() as facts:
        assert facts.relations.is_active("acme", USER, "u-1", at(50))
    with seeded.unit_of_work() as repos:
        repos.relations.transition("rel_1", RelationStatus.ACTIVE, RelationStatus.REVOKED, at(2), None)
    with seeded.fact_reads() as facts:
        assert not facts.relations.is_active("acme", USER, "u-1", at(50))


def test_an_unreachable_store_is_store_unavailable(tmp_path):
    store = create_store("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_timeout=1)
    try:
        with pytest.raises(StoreUnavailable), store.fact_reads() as facts:
            facts.partners.get("acme")
    finally:
        store.dispose()


@pytest.mark.postgres
def test_an_optimistic_reading_on_a_killed_connection_is_read_again(postgres_url, postgres_admin_engine):
    store = create_store(postgres_url, pool_size=1)
    try:
        store.migrate()
        with store.fact_reads() as facts:
            revision = facts.revision()
        _kill_connections(postgres_admin_engine, postgres_url)
        with pytest.raises(ReadAgain) as dead, store.fact_reads.at_revision(revision) as facts:
            facts.partners.get("acme")
        assert dead.value.revision == -1
        with store.fact_reads.at_revision(revision) as facts:  # on a new connection
            assert facts.partners.get("acme") is None
    finally:
        store.dispose()


def _kill_connections(postgres_admin_engine, postgres_url) -> int:
    with postgres_admin_engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :name"),
            {"name": make_url(postgres_url).database}).scalar()


@pytest.mark.postgres
def test_connections_killed_by_the_server_are_replaced_without_a_failed_read(postgres_url, postgres_admin_engine):
    # The reading's first statement checks its pooled connections (no ping before it): a restart or
    # failover that killed every one of them costs no check a failure.
    store = create_store(postgres_url, pool_size=2)
    try:
        store.migrate()
        for _ in range(3):
            with store.fact_reads() as facts:
                revision = facts.revision()
        assert _kill_connections(postgres_admin_engine, postgres_url) >= 1
        for _ in range(3):
            with store.fact_reads() as facts:
                assert facts.revision() == revision
                assert facts.partners.get("acme") is None
    finally:
        store.dispose()


def test_connections_opened_ahead_wait_in_the_pool(store):
    store.open_connections(3)
    assert store.engine.pool.checkedin() == 3


def test_opening_connections_ahead_of_an_unreachable_store_is_left_to_the_reads():
    store = create_store("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_timeout=1)
    try:
        store.open_connections(2)
        assert store.engine.pool.checkedin() == 0
    finally:
        store.dispose()


def test_optimistic_readings_nest_and_a_closed_store_opens_new_connections(seeded):
    with seeded.fact_reads() as facts:
        revision = facts.revision()
    with seeded.fact_reads.at_revision(revision) as outer:
        with seeded.fact_reads.at_revision(revision) as inner:  # on another connection (SQLite: pooled)
            assert inner.partners.get("acme").id == "acme"
        assert outer.partners.get("acme").id == "acme"
    seeded.fact_reads.close()
    with seeded.fact_reads.at_revision(revision) as facts:
        assert facts.api_keys.find_by_digest("d" * 64).id == "key_1"


class _RecordedReads:
    """The store's reads, recording which kind of reading each fact cache miss opened."""

    def __init__(self, reads) -> None:
        self._reads = reads
        self.opened: list = []

    def __call__(self, optimistic: bool = False):
        self.opened.append("transaction")
        return self._reads()

    def at_revision(self, revision: int):
        self.opened.append(revision)
        return self._reads.at_revision(revision)


def test_a_fact_cache_miss_reads_at_the_caches_revision_and_in_a_transaction_once_the_store_moved_on(
        seeded, database_url):
    from service.check.caching.fact_cache import FactCache

    reads = _RecordedReads(seeded.fact_reads)
    cache = FactCache(seeded.unit_of_work, 100, max_age_seconds=3600, fact_reads=reads)
    revision = cache.refresh()
    assert cache.facts.partners.get("acme").status is PartnerStatus.SUSPENDED
    assert reads.opened == [revision], "one optimistic reading at the cache's revision"
    other = create_store(database_url)  # another replica's write: this cache has not refreshed
    try:
        with other.unit_of_work() as repos:
            repos.relations.transition("rel_1", RelationStatus.ACTIVE, RelationStatus.REVOKED, at(2), None)
    finally:
        other.dispose()
    assert cache.revision == revision
    assert not cache.facts.relations.is_active("acme", USER, "u-1", at(50)), "as fresh as the store"
    assert reads.opened == [revision, revision, "transaction"]
