"""RevisionMemo, against a fake of the store's readings: what it keeps for one revision, what it
reads every time, and that a new revision starts from nothing."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from service.check.caching.revision_memo import RevisionMemo
from service.domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    SigningKeyRecord,
    SubjectType,
)
from service.domain.ports import ReadAgain

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class _Counted:
    """A reader answering from a dict, counting its reads."""

    def __init__(self, store: FakeStore, name: str) -> None:
        self._store = store
        self._name = name

    def _read(self, key):
        self._store.reads.append((self._name, key))
        return self._store.records.get((self._name, key))

    def get(self, key):
        return self._read(key)

    def find_by_issuer(self, issuer):
        return self._read(issuer)

    def find_by_digest(self, digest):
        return self._read(digest)

    def is_active(self, partner_id, subject_type, subject_id, now):
        return bool(self._read((partner_id, subject_type, subject_id)))

    def list(self):
        self._store.reads.append((self._name, "list"))
        return list(self._store.signing_keys)


class _Reading:
    def __init__(self, store: FakeStore) -> None:
        self._store = store
        for name in ("partners", "issuers", "oauth_clients", "api_keys", "relations", "refresh_tokens",
                     "signing_keys", "revoked_tokens", "revoked_access_tokens"):
            setattr(self, name, _Counted(store, name))

    def revision(self):
        return self._store.revision

    def revoked_token_ids(self):
        self._store.reads.append(("revoked_tokens", "all"))
        return frozenset(self._store.revoked)

    def revoked_access_token_ids(self):
        self._store.reads.append(("revoked_access_tokens", "all"))
        return frozenset(self._store.revoked_access)


class FakeStore:
    """A FactReads: each reading sees the records as they are when it opens."""

    def __init__(self) -> None:
        self.revision = 1
        self.records: dict = {}
        self.revoked: set[tuple[str, str]] = set()
        self.revoked_access: set[str] = set()
        self.signing_keys: list[SigningKeyRecord] = []
        self.reads: list = []
        self.opened: list = []  # "transaction", or the revision of an optimistic reading

    @contextmanager
    def __call__(self, optimistic: bool = False):
        self.opened.append("transaction")
        yield _Reading(self)

    @contextmanager
    def at_revision(self, revision: int):
        """As the store's: every read sees the revision as it is then; a reading that sees another
        one than `revision` ends in ReadAgain."""
        self.opened.append(revision)
        yield _Reading(self)
        if self.revision != revision:
            raise ReadAgain(self.revision)

    def change(self) -> None:
        self.revision += 1


ACME = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read",), (), NOW)
ISSUER = IssuerRecord("iss_1", "https://idp.test", "https://api.test", ("RS256",), {"keys": []}, None, True, "cn",
                      NOW)


def _store() -> FakeStore:
    store = FakeStore()
    store.records[("partners", "acme")] = ACME
    store.records[("issuers", "https://idp.test")] = ISSUER
    store.records[("oauth_clients", "cli_1")] = OAuthClientRecord("cli_1", "acme", "robot", "s", (), (), True, NOW)
    store.records[("api_keys", "d1")] = ApiKeyRecord("key_1", "acme", "d1", "ci", (), (), (), NOW)
    store.records[("relations", ("acme", SubjectType.USER, "u-1"))] = True
    return store


def test_partners_issuers_and_clients_are_read_once_per_revision():
    store = _store()
    memo = RevisionMemo(store)
    for _ in range(3):
        with memo() as facts:
            assert facts.partners.get("acme") is ACME
            assert facts.issuers.find_by_issuer("https://idp.test") is ISSUER
            assert facts.oauth_clients.get("cli_1").id == "cli_1"
            assert facts.revision() == 1
    assert store.reads == [("partners", "acme"), ("issuers", "https://idp.test"), ("oauth_clients", "cli_1")]


def test_a_new_revision_reads_again_and_sees_the_change():
    store = _store()
    memo = RevisionMemo(store)
    with memo() as facts:
        assert facts.partners.get("acme").status is PartnerStatus.ACTIVE
    suspended = PartnerRecord("acme", "Acme", PartnerStatus.SUSPENDED, ("user:read",), (), NOW)
    store.records[("partners", "acme")] = suspended
    store.change()
    with memo() as facts:
        assert facts.partners.get("acme") is suspended
        assert facts.revision() == 2
    assert store.reads.count(("partners", "acme")) == 2


def test_api_keys_relations_and_unknown_ids_are_read_every_time():
    store = _store()
    memo = RevisionMemo(store)
    for _ in range(2):
        with memo() as facts:
            assert facts.api_keys.find_by_digest("d1").id == "key_1"
            assert facts.relations.is_active("acme", SubjectType.USER, "u-1", NOW)
            assert facts.partners.get("nobody") is None
    assert store.reads.count(("api_keys", "d1")) == 2
    assert store.reads.count(("relations", ("acme", SubjectType.USER, "u-1"))) == 2
    assert store.reads.count(("partners", "nobody")) == 2


def test_revoked_tokens_are_one_set_per_revision():
    store = _store()
    store.revoked = {("iss_1", "jti-1")}
    store.revoked_access = {"at-1"}
    memo = RevisionMemo(store)
    with memo() as facts:
        assert facts.revoked_tokens.is_revoked("iss_1", "jti-1")
        assert not facts.revoked_tokens.is_revoked("iss_1", "jti-2")
        assert not facts.revoked_tokens.is_revoked("iss_2", "jti-1")
        assert facts.revoked_access_tokens.is_revoked("at-1")
        assert not facts.revoked_access_tokens.is_revoked("at-2")
    with memo() as facts:
        assert not facts.revoked_tokens.is_revoked("iss_1", "jti-3")
    assert store.reads == [("revoked_tokens", "all"), ("revoked_access_tokens", "all")]
    store.revoked.add(("iss_1", "jti-3"))
    store.change()
    with memo() as facts:
        assert facts.revoked_tokens.is_revoked("iss_1", "jti-3")
    assert store.reads.count(("revoked_tokens", "all")) == 2


def test_signing_keys_are_kept_whole_and_judged_against_the_clock():
    store = _store()
    retired = SigningKeyRecord("old", "ES256", "sealed", {"kid": "old"}, NOW, retired_at=NOW,
                               publish_until=NOW + timedelta(minutes=5))
    active = SigningKeyRecord("new", "ES256", "sealed", {"kid": "new"}, NOW)
    store.signing_keys = [active, retired]
    memo = RevisionMemo(store)
    with memo() as facts:
        assert facts.signing_keys.active() is active
        assert [key.kid for key in facts.signing_keys.published(NOW)] == ["new", "old"]
        assert [key.kid for key in facts.signing_keys.published(NOW + timedelta(minutes=5))] == ["new"]
    assert store.reads.count(("signing_keys", "list")) == 1


def test_a_full_memo_is_emptied_and_read_again():
    store = _store()
    for index in range(3):
        store.records[("partners", f"p{index}")] = PartnerRecord(f"p{index}", "P", PartnerStatus.ACTIVE, (), (), NOW)
    memo = RevisionMemo(store, max_entries=2)
    with memo() as facts:
        for index in (0, 1, 2, 0):
            assert facts.partners.get(f"p{index}").id == f"p{index}"
    assert store.reads.count(("partners", "p0")) == 2


def test_an_optimistic_reading_answers_from_the_revision_last_seen_and_moves_on_when_it_cannot_stand():
    store = _store()
    memo = RevisionMemo(store)
    with memo(optimistic=True) as facts:  # no revision seen yet: a transaction's reading
        assert facts.partners.get("acme") is ACME
    with memo(optimistic=True) as facts:
        assert facts.partners.get("acme") is ACME
    assert store.opened == ["transaction", 1]
    assert store.reads.count(("partners", "acme")) == 1, "the optimistic reading answered from memory"

    suspended = PartnerRecord("acme", "Acme", PartnerStatus.SUSPENDED, ("user:read",), (), NOW)
    store.records[("partners", "acme")] = suspended
    store.change()
    with pytest.raises(ReadAgain), memo(optimistic=True) as facts:
        assert facts.partners.get("acme") is ACME  # revision 1's answer, which may not be used
    with memo(optimistic=True) as facts:  # read again: from revision 2's memo
        assert facts.partners.get("acme") is suspended
        assert facts.revision() == 2
    assert store.opened == ["transaction", 1, 1, 2]


def test_a_reading_that_saw_an_older_revision_leaves_a_newer_memo_alone():
    store = _store()
    memo = RevisionMemo(store)
    with memo() as facts:
        facts.partners.get("acme")
    store.change()
    store.change()
    with memo() as facts:  # revision 3
        facts.partners.get("acme")
    store.revision = 2  # as a statement racing the change to 3 would see it
    with pytest.raises(ReadAgain), memo(optimistic=True):
        pass
    store.revision = 3
    with memo(optimistic=True) as facts:
        facts.partners.get("acme")
    assert store.opened == ["transaction", "transaction", 3, 3]
    assert store.reads.count(("partners", "acme")) == 2
