"""CachedFacts, the CheckFacts decorator that answers from the fact cache while it is fresh enough,
against a fake inner CheckFacts and a FactCache over a fake unit of work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.check.caching.fact_cache import FactCache
from service.check.caching.facts import CachedFacts
from service.domain.credentials import PresentedCredential, PresentedKind
from service.domain.errors import CredentialRejected, StoreUnavailable
from service.domain.model import (
    AuthenticatedCredential,
    CredentialKind,
    PartnerRecord,
    PartnerStatus,
    Principal,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from tests.support.fact_store import FakeUnitOfWork

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACME = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read",), (), NOW)
CREDENTIAL = AuthenticatedCredential(Principal("acme", "key_1", CredentialKind.API_KEY), ACME)
KEY = PresentedCredential(PresentedKind.API_KEY, "tg_live_good")
OTHER_KEY = PresentedCredential(PresentedKind.API_KEY, "tg_live_other")


class InnerReading:
    def __init__(self, inner: FakeInnerFacts) -> None:
        self._inner = inner

    def __enter__(self) -> InnerReading:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def credential(self, presented, now):
        self._inner.credential_calls += 1
        return CREDENTIAL

    def is_active(self, partner_id, subject_type, subject_id, now):
        return True

    def find_open(self, partner_id, subject_type, subject_id):
        return None


class FakeInnerFacts:
    """The facts CachedFacts wraps (the store's, in the server): records every reading opened."""

    def __init__(self) -> None:
        self.readings: list[int] = []
        self.credential_calls = 0

    def reading(self, at_least_as_fresh: int, optimistic: bool = False) -> InnerReading:
        self.readings.append(at_least_as_fresh)
        return InnerReading(self)


class FakeVerifier:
    """A CredentialVerifier: presented value -> the credential, or the rejection it raises."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.facts_seen: list[object] = []

    def verify(self, presented, facts, now):
        self.calls.append(presented.value)
        self.facts_seen.append(facts)
        answer = self.answers[presented.value]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def inner() -> FakeInnerFacts:
    return FakeInnerFacts()


@pytest.fixture
def verifier() -> FakeVerifier:
    return FakeVerifier({KEY.value: CREDENTIAL})


@pytest.fixture
def facts(inner, cache, verifier) -> CachedFacts:
    return CachedFacts(inner, cache, verifier)


def test_a_current_cache_answers_without_opening_the_inner_reading(facts, inner, cache, unit_of_work):
    calls_before = unit_of_work.revision_calls
    with facts.reading(0) as reading:
        assert reading.credential(KEY, NOW) is CREDENTIAL
    with facts.reading(cache.revision) as reading:  # exactly as fresh as the cache: still the cache
        assert reading.credential(KEY, NOW) is CREDENTIAL
    assert inner.readings == []
    assert unit_of_work.revision_calls == calls_before, "a current cache is not refreshed"


def test_relations_are_read_through_the_cache_once(facts, unit_of_work):
    unit_of_work.relations.records[("acme", SubjectType.USER, "u-1")] = RelationRecord(
        "rel_1", "acme", SubjectType.USER, "u-1", RelationStatus.ACTIVE, NOW, NOW)
    for _ in range(2):
        with facts.reading(0) as reading:
            assert reading.is_active("acme", SubjectType.USER, "u-1", NOW)
            assert not reading.is_active("acme", SubjectType.USER, "u-2", NOW)
            assert reading.find_open("acme", SubjectType.USER, "u-1").id == "rel_1"
    assert unit_of_work.relations.reads == 2, "one store read per triple, then the cache"
    assert all(read_only for read_only, _ in unit_of_work.opened)


def test_a_relation_is_judged_against_the_clock_on_every_reading(facts, unit_of_work):
    unit_of_work.relations.records[("acme", SubjectType.USER, "u-1")] = RelationRecord(
        "rel_1", "acme", SubjectType.USER, "u-1", RelationStatus.ACTIVE, NOW, NOW,
        expires_at=NOW + timedelta(seconds=60))
    with facts.reading(0) as reading:
        assert reading.is_active("acme", SubjectType.USER, "u-1", NOW)
        assert not reading.is_active("acme", SubjectType.USER, "u-1", NOW + timedelta(seconds=60))


def test_a_newer_revision_asked_for_refreshes_the_cache_first(facts, inner, cache, unit_of_work):
    assert cache.revision == 1
    unit_of_work.store_revision = 7  # another replica wrote
    generation = cache.generation
    with facts.reading(7) as reading:
        assert reading.credential(KEY, NOW) is CREDENTIAL
    assert cache.revision == 7
    assert cache.generation != generation, "a newer revision drops what was cached"
    assert inner.readings == [], "the refreshed cache is as fresh as asked"


def test_a_revision_the_store_has_not_reached_reads_the_inner_facts(facts, inner, cache, unit_of_work):
    unit_of_work.store_revision = 7
    with facts.reading(9) as reading:
        assert reading.credential(KEY, NOW) is CREDENTIAL
    assert cache.revision == 7, "it refreshed first"
    assert inner.readings == [9]
    assert inner.credential_calls == 1


def test_a_cache_past_its_max_age_is_refreshed_before_it_answers(facts, inner, cache, unit_of_work, monotonic):
    calls = unit_of_work.revision_calls
    monotonic.now += 10  # at the bound: still current
    with facts.reading(0):
        pass
    assert unit_of_work.revision_calls == calls
    monotonic.now += 0.5
    assert not cache.is_current()
    with facts.reading(0):
        pass
    assert unit_of_work.revision_calls == calls + 1
    assert cache.is_current()
    assert inner.readings == []


def test_a_cache_past_its_max_age_fails_closed_while_the_store_is_down(facts, inner, cache, unit_of_work, monotonic):
    with facts.reading(0) as reading:
        reading.credential(KEY, NOW)
    monotonic.now += 11
    unit_of_work.revision_error = StoreUnavailable("the store is down")
    with pytest.raises(StoreUnavailable):
        facts.reading(0)
    assert inner.readings == []
    assert not cache.is_current()
    monotonic.now -= 11  # even back within the bound: the failed refresh is not forgotten
    assert not cache.is_current()
    with pytest.raises(StoreUnavailable):
        facts.reading(0)


def test_a_newer_revision_asked_for_fails_closed_while_the_store_is_down(facts, inner, unit_of_work):
    unit_of_work.revision_error = StoreUnavailable("the store is down")
    with pytest.raises(StoreUnavailable):
        facts.reading(5)
    assert inner.readings == []


def test_a_verified_credential_is_kept_across_readings(facts, verifier):
    for _ in range(2):
        with facts.reading(0) as reading:
            assert reading.credential(KEY, NOW) is CREDENTIAL
    assert verifier.calls == [KEY.value]


def test_the_verifier_reads_through_the_cache(facts, cache, verifier):
    with facts.reading(0) as reading:
        reading.credential(KEY, NOW)
    assert verifier.facts_seen == [cache.facts]


def test_each_token_is_verified_on_its_own(facts, verifier):
    other = AuthenticatedCredential(Principal("acme", "key_2", CredentialKind.API_KEY), ACME)
    verifier.answers[OTHER_KEY.value] = other
    with facts.reading(0) as reading:
        assert reading.credential(KEY, NOW) is CREDENTIAL
        assert reading.credential(OTHER_KEY, NOW) is other
    assert verifier.calls == [KEY.value, OTHER_KEY.value]


def test_one_string_presented_two_ways_is_verified_each_way():
    """A JWT in Authorization is a malformed API key in X-API-Key: the credential kept for one way of
    presenting a string never answers for the other."""
    cache = FactCache(FakeUnitOfWork(), max_entries=100, max_age_seconds=10)
    cache.refresh()
    as_jwt = PresentedCredential(PresentedKind.JWT, "eyJ.a.b")
    as_key = PresentedCredential(PresentedKind.API_KEY, "eyJ.a.b")

    class ByKind(FakeVerifier):
        def verify(self, presented, facts, now):
            self.calls.append(presented.kind)
            if presented.kind is PresentedKind.API_KEY:
                raise CredentialRejected("the API key is malformed")
            return CREDENTIAL

    verifier = ByKind({})
    facts = CachedFacts(FakeInnerFacts(), cache, verifier)
    with facts.reading(0) as reading:
        assert reading.credential(as_jwt, NOW) is CREDENTIAL
        with pytest.raises(CredentialRejected):
            reading.credential(as_key, NOW)
        assert reading.credential(as_jwt, NOW) is CREDENTIAL
    assert verifier.calls == [PresentedKind.JWT, PresentedKind.API_KEY]


def test_a_kept_credential_is_verified_again_from_its_expiry(facts, verifier):
    expiring = AuthenticatedCredential(Principal("acme", "key_1", CredentialKind.API_KEY), ACME,
                                       expires_at=NOW + timedelta(seconds=60))
    verifier.answers[KEY.value] = expiring
    with facts.reading(0) as reading:
        assert reading.credential(KEY, NOW) is expiring
        assert reading.credential(KEY, NOW + timedelta(seconds=59)) is expiring
    assert len(verifier.calls) == 1

    verifier.answers[KEY.value] = CredentialRejected("the API key expired", reason="token_expired")
    with facts.reading(0) as reading, pytest.raises(CredentialRejected) as rejected:
        reading.credential(KEY, NOW + timedelta(seconds=60))
    assert rejected.value.reason == "token_expired"
    assert len(verifier.calls) == 2, "re-verified once, at its expiry"
    with facts.reading(0) as reading, pytest.raises(CredentialRejected):
        reading.credential(KEY, NOW + timedelta(seconds=61))
    assert len(verifier.calls) == 3, "and at every later check: an expired credential is never answered from memory"


def test_a_rejection_is_never_kept(facts, verifier):
    verifier.answers[KEY.value] = CredentialRejected("the API key was revoked", reason="token_revoked")
    for _ in range(2):
        with facts.reading(0) as reading, pytest.raises(CredentialRejected):
            reading.credential(KEY, NOW)
    assert verifier.calls == [KEY.value, KEY.value]

    verifier.answers[KEY.value] = CREDENTIAL  # e.g. the key was just created: found at once
    with facts.reading(0) as reading:
        assert reading.credential(KEY, NOW) is CREDENTIAL


def test_a_write_of_this_process_drops_the_kept_credential(facts, cache, verifier, unit_of_work):
    with facts.reading(0) as reading:
        reading.credential(KEY, NOW)
    unit_of_work.committed_a_write()
    with facts.reading(0) as reading:
        reading.credential(KEY, NOW)
    assert verifier.calls == [KEY.value, KEY.value]


def test_a_refresh_at_the_same_revision_keeps_what_is_cached(facts, cache, verifier, monotonic):
    generation = cache.generation
    with facts.reading(0) as reading:
        reading.credential(KEY, NOW)
    monotonic.now += 11
    with facts.reading(0) as reading:  # refreshed: the revision has not moved
        reading.credential(KEY, NOW)
    assert cache.generation == generation
    assert verifier.calls == [KEY.value]
