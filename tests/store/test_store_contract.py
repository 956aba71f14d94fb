"""The store contract: every repository method behaves the same on SQLite and PostgreSQL.

Each test gets a freshly migrated store (the `store` fixture, once per backend) and talks to it
only through units of work, as the use cases do.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.domain.errors import Conflict, InvalidRequest, NotFound, StoreUnavailable
from service.domain.model import (
    ApiKeyRecord,
    ConnectTokenRecord,
    IssuerRecord,
    PartnerRecord,
    PartnerStatus,
    RelationEventRecord,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    RemoteKeys,
    SubjectType,
)
from service.store import create_store, default_sqlite_url
from service.store.migrate import current_revision
from service.store.models import Base

# Microseconds and a date far from "now" make lossy or zone-shifting storage visible.
T0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
USER, ORG = SubjectType.USER, SubjectType.ORGANIZATION
PENDING, ACTIVE, REVOKED, EXPIRED = (RelationStatus.PENDING, RelationStatus.ACTIVE, RelationStatus.REVOKED,
                                     RelationStatus.EXPIRED)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def partner(partner_id: str = "acme", **changes) -> PartnerRecord:
    values = dict(id=partner_id, name=partner_id.title(), status=PartnerStatus.ACTIVE,
                  grants=("user:read", "order:write"), roles=("reader",), created_at=T0)
    return PartnerRecord(**{**values, **changes})


def relation(relation_id: str, partner_id: str = "acme", subject_type: SubjectType = USER, subject_id: str = "u-1",
             status: RelationStatus = PENDING, expires_at: datetime | None = None) -> RelationRecord:
    return RelationRecord(relation_id, partner_id, subject_type, subject_id, status, T0, at(1), expires_at)


IN_AN_HOUR = at(3600)


def connect_token(token_id: str = "ct_1", expires_at: datetime = IN_AN_HOUR, **changes) -> ConnectTokenRecord:
    values = dict(id=token_id, digest=f"digest-{token_id}", organization_id="o-1", issued_by="platform",
                  created_at=T0, expires_at=expires_at, relation_ttl_seconds=86400)
    return ConnectTokenRecord(**{**values, **changes})


def seed(store, *records: PartnerRecord) -> None:
    with store.unit_of_work() as repos:
        for record in records or (partner(),):
            repos.partners.add(record)


# -- schema and migrations ---------------------------------------------------------------------


def test_every_committed_write_advances_the_revision_and_tells_listeners(store):
    heard = []
    store.unit_of_work.on_write(lambda: heard.append(store.unit_of_work.revision()))
    start = store.unit_of_work.revision()
    with store.unit_of_work(read_only=True) as repos:
        repos.partners.get("acme")
    assert store.unit_of_work.revision() == start and heard == []
    seed(store)
    assert store.unit_of_work.revision() == start + 1 and heard == [start + 1]
    try:
        with store.unit_of_work() as repos:
            repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
            raise RuntimeError("abandon the change")
    except RuntimeError:
        pass
    assert store.unit_of_work.revision() == start + 1 and heard == [start + 1]


def test_migrate_twice_is_a_no_op(store):
    seed(store)
    store.migrate()
    store.migrate()
    assert current_revision(store.engine) == "0005"
    with store.unit_of_work(read_only=True) as repos:
        assert repos.partners.get("acme") == partner()


def test_migrations_create_exactly_the_models(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_open_relation_index_is_partial_and_unique(store):
    indexes = {i["name"]: i for i in inspect(store.engine).get_indexes("relations")}
    open_index = indexes["uq_relations_open"]
    assert open_index["unique"] and open_index["column_names"] == ["partner_id", "subject_type", "subject_id"]
    where = open_index.get("dialect_options", {}).get(f"{store.backend}_where")
    assert "pending" in str(where) and "active" in str(where)


def test_an_unmigrated_database_is_unavailable_not_a_driver_error(database_url):
    empty = create_store(database_url)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            with empty.unit_of_work(read_only=True) as repos:
                repos.partners.get("acme")
        assert raised.value.message == "the store is unavailable"
        assert raised.value.__cause__ is not None
    finally:
        empty.dispose()


def test_default_sqlite_url_creates_its_directory(tmp_path):
    url = default_sqlite_url(tmp_path / "data")
    assert url == f"sqlite:///{(tmp_path / 'data' / 'tollgate.db').resolve()}"
    created = create_store(url)
    try:
        created.migrate()
        created.unit_of_work.ping()
        assert (tmp_path / "data" / "tollgate.db").is_file()
    finally:
        created.dispose()


@pytest.mark.parametrize("url", ["mysql://localhost/x", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_urls_are_refused(url):
    with pytest.raises(ValueError):
        create_store(url)


# -- units of work -----------------------------------------------------------------------------


def test_ping(store):
    store.unit_of_work.ping()


def test_an_exception_rolls_everything_back_and_passes_through(store):
    seed(store)
    failure = NotFound("stop here", reason="because")
    with pytest.raises(NotFound) as raised:
        with store.unit_of_work() as repos:
            repos.partners.add(partner("globex"))
            repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
            repos.relations.insert_open(relation("rel_1"))
            raise failure
    assert raised.value is failure
    with store.unit_of_work(read_only=True) as repos:
        assert repos.partners.get("globex") is None
        assert repos.partners.get("acme").status is PartnerStatus.ACTIVE
        assert repos.relations.get("rel_1") is None


def test_a_read_only_unit_of_work_reads(store):
    seed(store)
    with store.unit_of_work(read_only=True) as repos:
        assert [p.id for p in repos.partners.list()] == ["acme"]


def test_naive_datetimes_are_refused_as_a_programming_error(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        with store.unit_of_work() as repos:
            repos.partners.add(partner(created_at=T0.replace(tzinfo=None)))


def test_an_unexpected_constraint_violation_is_a_conflict(store):
    # A key of a partner that does not exist: the foreign key refuses it.
    key = ApiKeyRecord("key_1", "nobody", "d1", "k", (), (), (), T0)
    with pytest.raises(Conflict):
        with store.unit_of_work() as repos:
            repos.api_keys.add(key)


@pytest.mark.parametrize("key", ["nul\x00byte", "lone\ud800surrogate"])
def test_keys_no_row_can_hold_find_nothing(store, key):
    # Such keys arrive from outside (e.g. the iss of a token not yet verified): a miss, not an error.
    seed(store)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.partners.get(key) is None
        assert repos.api_keys.find_by_digest(key) is None and repos.api_keys.get(key) is None
        assert repos.issuers.find_by_issuer(key) is None and repos.issuers.get(key) is None
        assert not repos.revoked_tokens.is_revoked("iss_1", key)
        assert repos.relations.get(key) is None and repos.relations.find_open("acme", USER, key) is None
        assert not repos.relations.is_active("acme", USER, key, T0)
        assert repos.connect_tokens.find_by_digest(key) is None


# -- partners ----------------------------------------------------------------------------------


def test_partner_round_trip(store):
    record = partner(created_at=T0.astimezone(PLUS_TWO), status=PartnerStatus.SUSPENDED)
    seed(store, record)
    with store.unit_of_work(read_only=True) as repos:
        stored = repos.partners.get("acme")
        assert repos.partners.get("nobody") is None
    assert stored == record
    assert stored.created_at.tzinfo == UTC and stored.created_at == T0
    assert isinstance(stored.grants, tuple) and isinstance(stored.status, PartnerStatus)


def test_a_duplicate_partner_is_a_conflict_and_the_transaction_goes_on(store):
    seed(store)
    with store.unit_of_work() as repos:
        with pytest.raises(Conflict) as raised:
            repos.partners.add(partner(name="Someone else"))
        assert raised.value.reason == "partner_exists"
        repos.partners.add(partner("globex"))
    with store.unit_of_work(read_only=True) as repos:
        assert [p.id for p in repos.partners.list()] == ["acme", "globex"]
        assert repos.partners.get("acme").name == "Acme"


def test_partner_status_and_grants_change(store):
    seed(store, partner("globex"), partner("acme"))
    with store.unit_of_work() as repos:
        assert repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
        assert repos.partners.set_grants("acme", ("admin",), ())
        assert not repos.partners.set_status("nobody", PartnerStatus.SUSPENDED)
        assert not repos.partners.set_grants("nobody", (), ())
        # Seen at once inside the same unit of work.
        assert repos.partners.get("acme").status is PartnerStatus.SUSPENDED
    with store.unit_of_work(read_only=True) as repos:
        assert repos.partners.get("acme") == partner(status=PartnerStatus.SUSPENDED, grants=("admin",), roles=())
        assert [p.id for p in repos.partners.list()] == ["acme", "globex"]


# -- API keys ----------------------------------------------------------------------------------


def test_api_key_round_trip_and_lookups(store):
    seed(store, partner(), partner("globex"))
    full = ApiKeyRecord("key_1", "acme", "a" * 64, "full", ("user:read",), ("reader",), ("C-1", "C-2"), T0,
                        expires_at=at(60).astimezone(PLUS_TWO), revoked_at=at(30))
    bare = ApiKeyRecord("key_2", "acme", "b" * 64, "", (), (), (), at(1))
    other = ApiKeyRecord("key_3", "globex", "c" * 64, "other", (), (), (), T0)
    with store.unit_of_work() as repos:
        for key in (bare, full, other):
            repos.api_keys.add(key)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.api_keys.find_by_digest("a" * 64) == full
        assert repos.api_keys.get("key_2") == bare
        assert repos.api_keys.find_by_digest("f" * 64) is None and repos.api_keys.get("key_9") is None
        assert repos.api_keys.list_for_partner("acme") == [full, bare]
        assert repos.api_keys.list_for_partner("nobody") == []
        assert repos.api_keys.get("key_1").expires_at.tzinfo == UTC


def test_a_duplicate_key_digest_is_refused(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.api_keys.add(ApiKeyRecord("key_1", "acme", "d", "one", (), (), (), T0))
    with pytest.raises(Conflict):
        with store.unit_of_work() as repos:
            repos.api_keys.add(ApiKeyRecord("key_2", "acme", "d", "two", (), (), (), T0))


def test_an_api_key_is_revoked_once(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.api_keys.add(ApiKeyRecord("key_1", "acme", "d", "one", (), (), (), T0))
    with store.unit_of_work() as repos:
        assert repos.api_keys.revoke("key_1", at(5))
        assert not repos.api_keys.revoke("key_1", at(6))
        assert not repos.api_keys.revoke("key_9", at(6))
    with store.unit_of_work(read_only=True) as repos:
        assert repos.api_keys.get("key_1").revoked_at == at(5)


# -- issuers and revoked tokens ------------------------------------------------------------------

JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}


def asymmetric_issuer(issuer_id: str = "iss_1", iss: str = "https://issuer.test") -> IssuerRecord:
    return IssuerRecord(issuer_id, iss, "https://api.test", ("EdDSA", "ES256"), JWKS, None, True,
                        "customer_numbers", T0)


def test_issuer_round_trip_and_lookups(store):
    hmac = IssuerRecord("iss_2", "https://hmac.test", "aud", ("HS256",), None, "gAAAAAsealed", False, "cn",
                        at(1).astimezone(PLUS_TWO))
    with store.unit_of_work() as repos:
        repos.issuers.add(asymmetric_issuer())
        repos.issuers.add(hmac)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.issuers.get("iss_1") == asymmetric_issuer()
        assert repos.issuers.find_by_issuer("https://hmac.test") == hmac
        assert repos.issuers.find_by_issuer("https://issuer.test/") is None  # exact match only
        assert repos.issuers.get("iss_9") is None
        assert repos.issuers.list() == [hmac, asymmetric_issuer()]  # ordered by iss
        assert repos.issuers.get("iss_2").jwks is None


def test_a_duplicate_issuer_is_a_conflict_and_the_transaction_goes_on(store):
    with store.unit_of_work() as repos:
        repos.issuers.add(asymmetric_issuer())
    with store.unit_of_work() as repos:
        with pytest.raises(Conflict) as raised:
            repos.issuers.add(asymmetric_issuer("iss_2"))  # same iss, other id
        assert raised.value.reason == "issuer_exists"
        repos.issuers.add(asymmetric_issuer("iss_3", "https://other.test"))
    with store.unit_of_work(read_only=True) as repos:
        assert [i.id for i in repos.issuers.list()] == ["iss_1", "iss_3"]


def test_issuer_keys_are_replaced(store):
    rotated = {"keys": [*JWKS["keys"], {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "k2"}]}
    with store.unit_of_work() as repos:
        repos.issuers.add(asymmetric_issuer())
    with store.unit_of_work() as repos:
        assert repos.issuers.replace_keys("iss_1", rotated)
        assert not repos.issuers.replace_keys("iss_9", rotated)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.issuers.get("iss_1").jwks == rotated


def remote_issuer(issuer_id: str = "iss_r", iss: str = "https://idp.test") -> IssuerRecord:
    remote = RemoteKeys("https://idp.test/jwks", "https://idp.test/.well-known/openid-configuration",
                        fetched_at=T0, refresh_at=at(300))
    return IssuerRecord(issuer_id, iss, "https://api.test", ("RS256",), JWKS, None, True, "customer_numbers", T0,
                        remote=remote)


def test_remote_issuers_round_trip_and_are_listed_apart(store):
    with store.unit_of_work() as repos:
        repos.issuers.add(asymmetric_issuer())
        repos.issuers.add(remote_issuer())
    with store.unit_of_work(read_only=True) as repos:
        assert repos.issuers.get("iss_r") == remote_issuer()
        assert repos.issuers.get("iss_1").remote is None
        assert repos.issuers.list_remote() == [remote_issuer()]


def test_one_fetcher_at_a_time_until_its_claim_ends_or_expires(store):
    with store.unit_of_work() as repos:
        repos.issuers.add(remote_issuer())
    with store.unit_of_work() as repos:
        assert not repos.issuers.claim_fetch("iss_r", at(0), at(30))  # not due before at(300)
        assert repos.issuers.claim_fetch("iss_r", at(300), at(330))
        assert not repos.issuers.claim_fetch("iss_r", at(310), at(340))  # another process: refused
        assert not repos.issuers.claim_fetch("iss_9", at(310), at(340))
    with store.unit_of_work() as repos:
        assert repos.issuers.claim_fetch("iss_r", at(330), at(360))  # the first claim expired
        repos.issuers.record_fetch_success("iss_r", {"keys": []}, at(331), at(631), "https://idp.test/jwks2")
        assert not repos.issuers.claim_fetch("iss_r", at(332), at(362))  # fetched: due again at(631)
        assert repos.issuers.claim_fetch("iss_r", at(631), at(661))  # a recorded fetch ends the claim


def test_one_refetch_per_cool_down(store):
    with store.unit_of_work() as repos:
        repos.issuers.add(remote_issuer())
    with store.unit_of_work() as repos:
        assert repos.issuers.claim_refetch("iss_r", at(0), at(30))
        assert not repos.issuers.claim_refetch("iss_r", at(29), at(59))
        assert repos.issuers.claim_refetch("iss_r", at(30), at(60))


def test_fetch_outcomes_are_recorded_and_a_failure_keeps_the_keys(store):
    rotated = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "k2"}]}
    with store.unit_of_work() as repos:
        repos.issuers.add(remote_issuer())
    with store.unit_of_work() as repos:
        repos.issuers.record_fetch_failure("iss_r", "timed out", at(400), at(405))
        repos.issuers.record_fetch_failure("iss_r", "HTTP 503", at(405), at(415))
    with store.unit_of_work(read_only=True) as repos:
        failed = repos.issuers.get("iss_r")
    assert failed.jwks == JWKS
    assert (failed.remote.error, failed.remote.error_at, failed.remote.failures) == ("HTTP 503", at(405), 2)
    assert (failed.remote.fetched_at, failed.remote.refresh_at) == (T0, at(415))
    with store.unit_of_work() as repos:
        repos.issuers.record_fetch_success("iss_r", rotated, at(420), at(720), "https://idp.test/jwks")
    with store.unit_of_work(read_only=True) as repos:
        fetched = repos.issuers.get("iss_r")
    assert fetched.jwks == rotated
    assert (fetched.remote.fetched_at, fetched.remote.refresh_at, fetched.remote.failures) == (at(420), at(720), 0)
    assert fetched.remote.error == "HTTP 503"  # the last failure stays visible, with its time


def test_token_revocation_is_idempotent(store):
    with store.unit_of_work() as repos:
        repos.issuers.add(asymmetric_issuer())
    with store.unit_of_work() as repos:
        assert not repos.revoked_tokens.is_revoked("iss_1", "jti-1")
        repos.revoked_tokens.revoke("iss_1", "jti-1", T0, at(300))
        repos.revoked_tokens.revoke("iss_1", "jti-1", at(1), None)
    with store.unit_of_work() as repos:
        repos.revoked_tokens.revoke("iss_1", "jti-1", at(2), None)
        repos.revoked_tokens.revoke("iss_1", "jti-2", at(2), None)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.revoked_tokens.is_revoked("iss_1", "jti-1")
        assert repos.revoked_tokens.is_revoked("iss_1", "jti-2")
        assert not repos.revoked_tokens.is_revoked("iss_1", "jti-3")
        assert not repos.revoked_tokens.is_revoked("iss_9", "jti-1")


# -- relations ---------------------------------------------------------------------------------


def test_relation_round_trip(store):
    seed(store)
    pending = relation("rel_1", expires_at=at(3600).astimezone(PLUS_TWO))
    active = relation("rel_2", subject_type=ORG, subject_id="o-1", status=ACTIVE)
    with store.unit_of_work() as repos:
        assert repos.relations.insert_open(pending)
        assert repos.relations.insert_open(active)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.relations.get("rel_1") == pending
        assert repos.relations.get("rel_2") == active
        assert repos.relations.get("rel_9") is None
        assert repos.relations.find_open("acme", USER, "u-1") == pending
        assert repos.relations.find_open("acme", ORG, "o-1") == active
        assert repos.relations.find_open("acme", ORG, "u-1") is None
        stored = repos.relations.get("rel_1")
    assert isinstance(stored.subject_type, SubjectType) and isinstance(stored.status, RelationStatus)
    assert stored.expires_at.tzinfo == UTC


def test_a_second_open_relation_is_refused_and_the_transaction_goes_on(store):
    seed(store)
    with store.unit_of_work() as repos:
        assert repos.relations.insert_open(relation("rel_1"))
        assert not repos.relations.insert_open(relation("rel_2", status=ACTIVE))
        # The refused insert must not poison the transaction (PostgreSQL would abort it).
        repos.partners.add(partner("globex"))
        assert repos.relations.insert_open(relation("rel_3", partner_id="globex"))
    with store.unit_of_work(read_only=True) as repos:
        assert repos.partners.get("globex") is not None
        assert repos.relations.get("rel_2") is None
        assert repos.relations.find_open("acme", USER, "u-1").id == "rel_1"
        assert repos.relations.find_open("globex", USER, "u-1").id == "rel_3"


def test_a_closed_relation_frees_its_triple(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("rel_1", status=ACTIVE))
        assert repos.relations.transition("rel_1", ACTIVE, REVOKED, at(5), None)
        assert repos.relations.insert_open(relation("rel_2"))
    with store.unit_of_work(read_only=True) as repos:
        assert repos.relations.find_open("acme", USER, "u-1").id == "rel_2"


def test_transition_is_compare_and_set(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("rel_1", expires_at=at(60)))
    with store.unit_of_work() as repos:
        assert not repos.relations.transition("rel_1", ACTIVE, REVOKED, at(5), None)  # it is pending
        assert not repos.relations.transition("rel_9", PENDING, ACTIVE, at(5), None)
        assert repos.relations.get("rel_1") == relation("rel_1", expires_at=at(60))
        assert repos.relations.transition("rel_1", PENDING, ACTIVE, at(10), at(7200))
        assert repos.relations.get("rel_1").status is ACTIVE  # seen inside the same unit of work
        assert not repos.relations.transition("rel_1", PENDING, RelationStatus.REJECTED, at(11), None)
    with store.unit_of_work(read_only=True) as repos:
        moved = repos.relations.get("rel_1")
    assert (moved.status, moved.updated_at, moved.expires_at, moved.created_at) == (ACTIVE, at(10), at(7200), T0)


def test_events_are_stored_with_ids_oldest_first(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("rel_1"))
        repos.relations.insert_open(relation("rel_2", subject_id="u-2"))
        first = repos.relations.append_event(RelationEventRecord("rel_1", "acme", T0, None, PENDING, "requested"))
        repos.relations.append_event(RelationEventRecord("rel_2", "acme", T0, None, PENDING, "requested"))
        second = repos.relations.append_event(
            RelationEventRecord("rel_1", "platform", at(9).astimezone(PLUS_TWO), PENDING, ACTIVE, "approved"))
    assert 0 < first.id < second.id
    assert second == RelationEventRecord("rel_1", "platform", at(9), PENDING, ACTIVE, "approved", second.id)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.relations.events("rel_1") == [first, second]
        assert repos.relations.events("rel_9") == []
        assert repos.relations.events("rel_1")[1].at.tzinfo == UTC


def test_is_active(store):
    seed(store, partner(), partner("globex"))
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("r1", subject_id="forever", status=ACTIVE))
        repos.relations.insert_open(relation("r2", subject_id="until", status=ACTIVE, expires_at=at(100)))
        repos.relations.insert_open(relation("r3", subject_id="pending", expires_at=at(100)))
        repos.relations.insert_open(relation("r4", subject_id="revoked", status=ACTIVE))
        repos.relations.transition("r4", ACTIVE, REVOKED, at(1), None)
        repos.relations.insert_open(relation("r5", subject_type=ORG, subject_id="o-1", status=ACTIVE))
    with store.unit_of_work(read_only=True) as repos:
        active = repos.relations.is_active
        assert active("acme", USER, "forever", at(10 ** 8))
        assert active("acme", USER, "until", at(99)) and not active("acme", USER, "until", at(100))
        assert not active("acme", USER, "pending", at(0))
        assert not active("acme", USER, "revoked", at(0))
        assert active("acme", ORG, "o-1", at(0)) and not active("acme", USER, "o-1", at(0))
        assert not active("globex", USER, "forever", at(0))
        assert active("acme", USER, "until", at(99).astimezone(PLUS_TWO))


def test_list_pages_in_creation_order(store):
    seed(store)
    with store.unit_of_work() as repos:
        for n in range(7):
            repos.relations.insert_open(relation(f"rel_{n}", subject_id=f"u-{n}"))
    seen, tokens, token = [], [], ""
    for _ in range(10):
        with store.unit_of_work(read_only=True) as repos:
            page, token = repos.relations.list(RelationFilter(), 3, token)
        seen.append([r.id for r in page])
        if not token:
            break
        tokens.append(token)
    assert seen == [["rel_0", "rel_1", "rel_2"], ["rel_3", "rel_4", "rel_5"], ["rel_6"]]
    assert all(t.isascii() and not t.isdigit() and "=" not in t for t in tokens)


def test_list_ends_without_a_token_when_the_last_page_is_full(store):
    seed(store)
    with store.unit_of_work() as repos:
        for n in range(6):
            repos.relations.insert_open(relation(f"rel_{n}", subject_id=f"u-{n}"))
        first, token = repos.relations.list(RelationFilter(), 3, "")
        second, last = repos.relations.list(RelationFilter(), 3, token)
        empty, none = repos.relations.list(RelationFilter(partner_id="nobody"), 3, "")
    assert len(first) == len(second) == 3 and token and last == ""
    assert (empty, none) == ([], "")


def test_list_filters(store):
    seed(store, partner(), partner("globex"))
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("a-u1", subject_id="u-1"))
        repos.relations.insert_open(relation("a-u2", subject_id="u-2", status=ACTIVE))
        repos.relations.insert_open(relation("a-o1", subject_type=ORG, subject_id="o-1", status=ACTIVE))
        repos.relations.insert_open(relation("g-u1", partner_id="globex", subject_id="u-1", status=ACTIVE))

    def ids(**criteria) -> list[str]:
        with store.unit_of_work(read_only=True) as repos:
            return [r.id for r in repos.relations.list(RelationFilter(**criteria), 100, "")[0]]

    assert ids() == ["a-u1", "a-u2", "a-o1", "g-u1"]
    assert ids(partner_id="acme") == ["a-u1", "a-u2", "a-o1"]
    assert ids(subject_type=ORG) == ["a-o1"]
    assert ids(subject_id="u-1") == ["a-u1", "g-u1"]
    assert ids(status=ACTIVE) == ["a-u2", "a-o1", "g-u1"]
    assert ids(partner_id="acme", subject_type=USER, subject_id="u-1", status=PENDING) == ["a-u1"]
    assert ids(partner_id="globex", status=PENDING) == []


def test_filtered_paging_keeps_the_filter(store):
    seed(store, partner(), partner("globex"))
    with store.unit_of_work() as repos:
        for n in range(5):
            repos.relations.insert_open(relation(f"a{n}", subject_id=f"u-{n}"))
            repos.relations.insert_open(relation(f"g{n}", partner_id="globex", subject_id=f"u-{n}"))
        first, token = repos.relations.list(RelationFilter(partner_id="globex"), 2, "")
        second, token = repos.relations.list(RelationFilter(partner_id="globex"), 2, token)
        third, token = repos.relations.list(RelationFilter(partner_id="globex"), 2, token)
    assert [r.id for r in first + second + third] == ["g0", "g1", "g2", "g3", "g4"] and token == ""


FOREIGN_PAGE_TOKENS = [
    "garbage", "1", "MQ", "!!!!", "cjE6MA", "cjE6LTE", "cjE6eA", "cjE6MQ==", " cjE6MQ", "x" * 500, "é",
    "cjE6OTk5OTk5OTk5OTk5OTk5OTk5OQ",  # r1:9999999999999999999, beyond a 64-bit seq
    "cjE6w6kx",  # r1:é1
    base64.urlsafe_b64encode(b"r2:5").decode(),
]


def test_a_foreign_page_token_is_invalid(store):
    with store.unit_of_work(read_only=True) as repos:
        for token in FOREIGN_PAGE_TOKENS:
            with pytest.raises(InvalidRequest) as raised:
                repos.relations.list(RelationFilter(), 3, token)
            assert (raised.value.field, raised.value.message) == ("page_token", "page_token is not valid"), token


def test_a_produced_page_token_of_an_emptied_range_just_ends(store):
    seed(store)
    with store.unit_of_work() as repos:
        for n in range(3):
            repos.relations.insert_open(relation(f"rel_{n}", subject_id=f"u-{n}"))
        _, token = repos.relations.list(RelationFilter(), 2, "")
        page, _ = repos.relations.list(RelationFilter(subject_id="u-0"), 2, token)
    assert page == []


def test_due_for_expiry(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.relations.insert_open(relation("late-pending", subject_id="u-1", expires_at=at(20)))
        repos.relations.insert_open(relation("early-active", subject_id="u-2", status=ACTIVE, expires_at=at(10)))
        repos.relations.insert_open(relation("future", subject_id="u-3", status=ACTIVE, expires_at=at(31)))
        repos.relations.insert_open(relation("forever", subject_id="u-4", status=ACTIVE))
        repos.relations.insert_open(relation("closed", subject_id="u-5", status=ACTIVE, expires_at=at(1)))
        repos.relations.transition("closed", ACTIVE, REVOKED, at(1), at(1))
    with store.unit_of_work() as repos:
        assert [r.id for r in repos.relations.due_for_expiry(at(30), 100)] == ["early-active", "late-pending"]
        assert [r.id for r in repos.relations.due_for_expiry(at(20), 1)] == ["early-active"]
        assert repos.relations.due_for_expiry(at(9), 100) == []
        due = repos.relations.due_for_expiry(at(20), 100)
        for r in due:
            assert repos.relations.transition(r.id, r.status, EXPIRED, at(20), r.expires_at)
        assert repos.relations.due_for_expiry(at(30), 100) == []


# -- connect tokens ----------------------------------------------------------------------------


def test_connect_token_round_trip(store):
    seed(store)
    token = connect_token(created_at=T0.astimezone(PLUS_TWO))
    bare = connect_token("ct_2", relation_ttl_seconds=None)
    with store.unit_of_work() as repos:
        repos.connect_tokens.add(token)
        repos.connect_tokens.add(bare)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.connect_tokens.find_by_digest("digest-ct_1") == token
        assert repos.connect_tokens.find_by_digest("digest-ct_2") == bare
        assert repos.connect_tokens.find_by_digest("digest-ct_9") is None


def test_a_connect_token_is_used_once(store):
    seed(store, partner(), partner("globex"))
    with store.unit_of_work() as repos:
        repos.connect_tokens.add(connect_token())
    with store.unit_of_work() as repos:
        assert repos.connect_tokens.mark_used("ct_1", "acme", at(5))
        assert not repos.connect_tokens.mark_used("ct_1", "globex", at(6))
        assert repos.connect_tokens.find_by_digest("digest-ct_1").used_by_partner_id == "acme"
    with store.unit_of_work() as repos:
        assert not repos.connect_tokens.mark_used("ct_1", "globex", at(7))
        assert not repos.connect_tokens.mark_used("ct_9", "globex", at(7))
        used = repos.connect_tokens.find_by_digest("digest-ct_1")
    assert used == connect_token(used_at=at(5), used_by_partner_id="acme")


def test_an_expired_connect_token_cannot_be_used(store):
    seed(store)
    with store.unit_of_work() as repos:
        repos.connect_tokens.add(connect_token(expires_at=at(60)))
    with store.unit_of_work() as repos:
        assert not repos.connect_tokens.mark_used("ct_1", "acme", at(60))  # expiry is exclusive
        assert not repos.connect_tokens.mark_used("ct_1", "acme", at(61))
        assert repos.connect_tokens.find_by_digest("digest-ct_1").used_at is None
        assert repos.connect_tokens.mark_used("ct_1", "acme", at(59).astimezone(PLUS_TWO))
