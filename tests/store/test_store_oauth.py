"""The token service's repositories on SQLite and PostgreSQL: OAuth clients, refresh token families
and tokens, revoked access token ids and signing keys; and the claims the database must decide
when many race (one rotation per refresh token, one active signing key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.domain.errors import Conflict
from service.domain.model import (
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
)
from service.store import create_store
from tests.support.races import race as racing

T0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
THREADS = 16


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seed_partners(store) -> None:
    with store.unit_of_work() as repos:
        for partner_id in ("acme", "globex"):
            repos.partners.add(PartnerRecord(partner_id, partner_id.title(), PartnerStatus.ACTIVE, (), (), T0))


def client(client_id: str = "cli_1", partner_id: str = "acme", created_at: datetime = T0,
           **changes) -> OAuthClientRecord:
    fields = dict(id=client_id, partner_id=partner_id, name=f"{client_id} robot", secret_digest="s" * 64,
                  scopes=("user:read", "read:bookings"), customer_numbers=("C-1", "C-2"), refresh_tokens=True,
                  created_at=created_at)
    fields.update(changes)
    return OAuthClientRecord(**fields)


def family(family_id: str = "rtf_1", client_id: str = "cli_1", **changes) -> RefreshFamilyRecord:
    fields = dict(id=family_id, client_id=client_id, scope=("user:read", "order:read"), created_at=T0)
    fields.update(changes)
    return RefreshFamilyRecord(**fields)


def refresh_token(token_id: str = "rt_1", digest: str = "d" * 64, family_id: str = "rtf_1",
                  **changes) -> RefreshTokenRecord:
    fields = dict(id=token_id, family_id=family_id, client_id="cli_1", digest=digest, created_at=T0,
                  expires_at=at(3600))
    fields.update(changes)
    return RefreshTokenRecord(**fields)


def signing_key(kid: str, created_at: datetime = T0) -> SigningKeyRecord:
    return SigningKeyRecord(kid=kid, algorithm="ES256", private_key_sealed=f"gAAAAA-sealed-{kid}",
                            public_jwk={"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": kid, "alg": "ES256",
                                        "use": "sig"}, created_at=created_at)


@pytest.fixture
def seeded(store):
    """A store with two partners, a client and a refresh token family with one token."""
    seed_partners(store)
    with store.unit_of_work() as repos:
        repos.oauth_clients.add(client())
        repos.refresh_tokens.add_family(family())
        repos.refresh_tokens.add(refresh_token())
    return store


@pytest.fixture
def racing_store(database_url):
    """A migrated store with a connection per thread, so all THREADS are inside a unit of work at once."""
    created = create_store(database_url, pool_size=THREADS, pool_timeout=30)
    created.migrate()
    seed_partners(created)
    with created.unit_of_work() as repos:
        repos.oauth_clients.add(client())
        repos.refresh_tokens.add_family(family())
        repos.refresh_tokens.add(refresh_token())
    yield created
    created.dispose()


def race(action) -> list:
    return racing(action, THREADS)


# -- OAuth clients ----------------------------------------------------------------------------------


def test_client_round_trip_and_listing(store):
    seed_partners(store)
    first = client("cli_1", created_at=T0.astimezone(PLUS_TWO), revoked_at=at(9), secret_rotated_at=at(5))
    bare = client("cli_2", scopes=(), customer_numbers=(), refresh_tokens=False, created_at=at(1))
    other = client("cli_3", "globex", created_at=at(2))
    with store.unit_of_work() as repos:
        for record in (other, bare, first):
            repos.oauth_clients.add(record)
    with store.unit_of_work(read_only=True) as repos:
        assert repos.oauth_clients.get("cli_1") == first
        assert repos.oauth_clients.get("cli_2") == bare
        assert repos.oauth_clients.get("cli_9") is None
        assert repos.oauth_clients.list_for_partner("acme") == [first, bare]  # oldest first
        assert repos.oauth_clients.list_for_partner(None) == [first, bare, other]
        assert repos.oauth_clients.list_for_partner("nobody") == []
        stored = repos.oauth_clients.get("cli_1")
    assert stored.created_at.tzinfo == UTC and stored.created_at == T0
    assert isinstance(stored.scopes, tuple) and isinstance(stored.customer_numbers, tuple)
    assert stored.refresh_tokens is True and bare.refresh_tokens is False


def test_a_client_must_be_new_and_of_a_known_partner(store):
    seed_partners(store)
    with store.unit_of_work() as repos:
        repos.oauth_clients.add(client())
    for record in (client(name="again"), client("cli_2", "nobody")):
        with pytest.raises(Conflict):
            with store.unit_of_work() as repos:
                repos.oauth_clients.add(record)
    with store.unit_of_work(read_only=True) as repos:
        assert [c.name for c in repos.oauth_clients.list_for_partner(None)] == ["cli_1 robot"]


def test_a_secret_is_replaced_until_the_client_is_revoked(store):
    seed_partners(store)
    with store.unit_of_work() as repos:
        repos.oauth_clients.add(client())
    with store.unit_of_work() as repos:
        assert repos.oauth_clients.set_secret("cli_1", "n" * 64, at(10))
        assert not repos.oauth_clients.set_secret("cli_9", "n" * 64, at(10))
        assert repos.oauth_clients.get("cli_1").secret_digest == "n" * 64  # seen in the same unit of work
    with store.unit_of_work() as repos:
        assert repos.oauth_clients.revoke("cli_1", at(20))
        assert not repos.oauth_clients.revoke("cli_1", at(30))
        assert not repos.oauth_clients.revoke("cli_9", at(30))
        assert not repos.oauth_clients.set_secret("cli_1", "m" * 64, at(40))
    with store.unit_of_work(read_only=True) as repos:
        assert repos.oauth_clients.get("cli_1") == client(secret_digest="n" * 64, secret_rotated_at=at(10),
                                                          revoked_at=at(20))


@pytest.mark.parametrize("key", ["nul\x00byte", "lone\ud800surrogate"])
def test_keys_no_row_can_hold_find_nothing(seeded, key):
    with seeded.unit_of_work(read_only=True) as repos:
        assert repos.oauth_clients.get(key) is None
        assert repos.refresh_tokens.get_family(key) is None
        assert repos.refresh_tokens.find_by_digest(key) is None
        assert repos.revoked_access_tokens.is_revoked(key) is False


# -- refresh token families and tokens ---------------------------------------------------------------


def test_family_and_token_round_trip(seeded):
    with seeded.unit_of_work() as repos:
        repos.refresh_tokens.add_family(family("rtf_2", scope=(), created_at=at(1).astimezone(PLUS_TWO)))
        repos.refresh_tokens.add(refresh_token("rt_2", "e" * 64, "rtf_2", used_at=at(2)))
    with seeded.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.get_family("rtf_1") == family()
        assert repos.refresh_tokens.get_family("rtf_2") == family("rtf_2", scope=(), created_at=at(1))
        assert repos.refresh_tokens.get_family("rtf_9") is None
        assert repos.refresh_tokens.find_by_digest("d" * 64) == refresh_token()
        assert repos.refresh_tokens.find_by_digest("e" * 64) == refresh_token("rt_2", "e" * 64, "rtf_2",
                                                                              used_at=at(2))
        assert repos.refresh_tokens.find_by_digest("f" * 64) is None
        assert isinstance(repos.refresh_tokens.get_family("rtf_1").scope, tuple)


def test_a_refresh_token_digest_is_unique_and_its_family_must_exist(seeded):
    for record in (refresh_token("rt_2"), refresh_token("rt_3", "e" * 64, family_id="rtf_9")):
        with pytest.raises(Conflict):
            with seeded.unit_of_work() as repos:
                repos.refresh_tokens.add(record)
    with seeded.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.find_by_digest("e" * 64) is None


def test_a_refresh_token_is_used_once(seeded):
    with seeded.unit_of_work() as repos:
        assert repos.refresh_tokens.mark_used("rt_1", at(5))
        assert not repos.refresh_tokens.mark_used("rt_1", at(6))
        assert not repos.refresh_tokens.mark_used("rt_9", at(6))
        assert repos.refresh_tokens.find_by_digest("d" * 64).used_at == at(5)
    with seeded.unit_of_work() as repos:
        assert not repos.refresh_tokens.mark_used("rt_1", at(7))
    with seeded.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.find_by_digest("d" * 64).used_at == at(5)


def test_a_rolled_back_claim_leaves_the_token_unused(seeded):
    with pytest.raises(RuntimeError):
        with seeded.unit_of_work() as repos:
            assert repos.refresh_tokens.mark_used("rt_1", at(5))
            raise RuntimeError("the refresh failed after its claim")
    with seeded.unit_of_work() as repos:
        assert repos.refresh_tokens.find_by_digest("d" * 64).used_at is None
        assert repos.refresh_tokens.mark_used("rt_1", at(6))


def test_a_family_is_revoked_once(seeded):
    with seeded.unit_of_work() as repos:
        assert repos.refresh_tokens.revoke_family("rtf_1", at(5))
        assert not repos.refresh_tokens.revoke_family("rtf_1", at(6))
        assert not repos.refresh_tokens.revoke_family("rtf_9", at(6))
    with seeded.unit_of_work() as repos:
        assert not repos.refresh_tokens.revoke_family("rtf_1", at(7))
    with seeded.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.get_family("rtf_1").revoked_at == at(5)  # the first revocation's time stays
        assert repos.refresh_tokens.find_by_digest("d" * 64).used_at is None  # its tokens are left as they were


def test_exactly_one_of_many_claims_a_refresh_token(racing_store):
    def claim(i: int) -> bool:
        with racing_store.unit_of_work() as repos:
            return repos.refresh_tokens.mark_used("rt_1", at(i + 1))

    results = race(claim)
    assert sorted(results) == [False] * (THREADS - 1) + [True]
    with racing_store.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.find_by_digest("d" * 64).used_at == at(results.index(True) + 1)


def test_exactly_one_of_many_revokes_a_family(racing_store):
    def revoke(i: int) -> bool:
        with racing_store.unit_of_work() as repos:
            return repos.refresh_tokens.revoke_family("rtf_1", at(i + 1))

    results = race(revoke)
    assert sorted(results) == [False] * (THREADS - 1) + [True]
    with racing_store.unit_of_work(read_only=True) as repos:
        assert repos.refresh_tokens.get_family("rtf_1").revoked_at == at(results.index(True) + 1)


# -- revoked access tokens -----------------------------------------------------------------------------


def test_revoking_an_access_token_is_idempotent(store):
    with store.unit_of_work() as repos:
        assert not repos.revoked_access_tokens.is_revoked("at_1")
        repos.revoked_access_tokens.revoke("at_1", "cli_1", at(1), at(3600))
        repos.revoked_access_tokens.revoke("at_1", "cli_1", at(2), at(3600))  # in the same unit of work
        assert repos.revoked_access_tokens.is_revoked("at_1")
    with store.unit_of_work() as repos:
        repos.revoked_access_tokens.revoke("at_1", "cli_1", at(3), at(3600))  # and in another
    with store.unit_of_work(read_only=True) as repos:
        assert repos.revoked_access_tokens.is_revoked("at_1")
        assert not repos.revoked_access_tokens.is_revoked("at_2")


def test_concurrent_revocations_of_one_access_token_all_succeed(racing_store):
    def revoke(i: int) -> bool:
        with racing_store.unit_of_work() as repos:
            repos.revoked_access_tokens.revoke("at_1", "cli_1", at(i), at(3600))
            return repos.revoked_access_tokens.is_revoked("at_1")

    assert race(revoke) == [True] * THREADS


# -- signing keys ------------------------------------------------------------------------------------


def test_one_active_signing_key(store):
    with store.unit_of_work() as repos:
        assert repos.signing_keys.active() is None
        assert repos.signing_keys.add_active(signing_key("k1"))
        # Refused by the unique index; the transaction goes on.
        assert not repos.signing_keys.add_active(signing_key("k2", at(1)))
        assert repos.signing_keys.active() == signing_key("k1")
    with store.unit_of_work() as repos:
        assert not repos.signing_keys.add_active(signing_key("k2", at(1)))
    with store.unit_of_work(read_only=True) as repos:
        assert repos.signing_keys.active() == signing_key("k1")
        assert repos.signing_keys.list() == [signing_key("k1")]
        assert isinstance(repos.signing_keys.active().public_jwk, dict)


def test_retire_then_add_a_new_active_key(store):
    with store.unit_of_work() as repos:
        assert repos.signing_keys.add_active(signing_key("k1"))
    with store.unit_of_work() as repos:
        assert repos.signing_keys.retire("k1", at(10), at(3610))
        assert not repos.signing_keys.retire("k1", at(11), at(3611))  # no longer active
        assert not repos.signing_keys.retire("k9", at(11), at(3611))
        assert repos.signing_keys.active() is None
        assert repos.signing_keys.add_active(signing_key("k2", at(10)))
    retired = SigningKeyRecord(**{**signing_key("k1").__dict__, "retired_at": at(10), "publish_until": at(3610)})
    with store.unit_of_work(read_only=True) as repos:
        assert repos.signing_keys.active() == signing_key("k2", at(10))
        assert repos.signing_keys.list() == [signing_key("k2", at(10)), retired]  # newest first
        assert repos.signing_keys.published(at(3609)) == [signing_key("k2", at(10)), retired]
        assert repos.signing_keys.published(at(3610)) == [signing_key("k2", at(10))]
        assert repos.signing_keys.published(at(99_999)) == [signing_key("k2", at(10))]


def test_exactly_one_of_many_first_keys_becomes_active(database_url):
    racing = create_store(database_url, pool_size=THREADS, pool_timeout=30)
    racing.migrate()
    try:
        def add(i: int) -> bool:
            with racing.unit_of_work() as repos:
                return repos.signing_keys.add_active(signing_key(f"k{i}", at(i)))

        results = race(add)
        assert sorted(results) == [False] * (THREADS - 1) + [True]
        with racing.unit_of_work(read_only=True) as repos:
            assert [key.kid for key in repos.signing_keys.list()] == [f"k{results.index(True)}"]
            assert repos.signing_keys.active().kid == f"k{results.index(True)}"
    finally:
        racing.dispose()
