"""RememberingChecker, the decision memo as a Checker decorator, against a fake inner Checker and a
FactCache over a fake unit of work: what is kept, for how long, and what every call still pays."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.check.caching.fact_cache import FactCache
from service.check.caching.remembering import RememberingChecker
from service.check.limits import CheckLimits
from service.check.query import Basis, BatchQuery, CheckCall, Checked, CheckItem, CheckQuery
from service.domain.decide import Resource, plan_check
from service.domain.decision import Decision, Reason, deny
from service.domain.explain import Step, StepOutcome
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
from service.domain.rate_limit import RateLimiter
from service.policy_file import load_policy
from tests.support.clock import MovableClock

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = load_policy(EXAMPLE_POLICY)
ACME = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read",), (), NOW)
PRINCIPAL = Principal("acme", "key_1", CredentialKind.API_KEY)
CREDENTIAL = AuthenticatedCredential(PRINCIPAL, ACME)
GET_U1 = CheckQuery(api_key="tg_live_good", operation="getUser", resource=Resource(user_id="u-1"))


def credential(expires_at: datetime | None = None) -> AuthenticatedCredential:
    return AuthenticatedCredential(PRINCIPAL, ACME, expires_at=expires_at)


def allowed(policy=POLICY, cred: AuthenticatedCredential = CREDENTIAL, query: CheckQuery = GET_U1) -> Checked:
    """What the core gives for an allow: the decision and the basis it rests on."""
    plan = plan_check(policy, query.operation, query.permissions, query.resource)
    return Checked(Decision(allowed=True, message="allowed", principal=cred.principal), None,
                   Basis(policy, plan, cred))


class FakeChecker:
    """The inner Checker: decodes the query as the core does, and gives its preset answer."""

    def __init__(self, answer: Checked, on_check=None) -> None:
        self.answer = answer
        self.calls = 0
        self.batches = 0
        self._on_check = on_check

    def check(self, call: CheckCall) -> Checked:
        self.calls += 1
        call.query()
        if self._on_check is not None:
            self._on_check()
        return self.answer

    def check_batch(self, batch: BatchQuery) -> list[Checked]:
        self.batches += 1
        return [self.answer for _ in batch.items]


def never_decoded() -> CheckQuery:
    raise AssertionError("the query was decoded")


class Decodes:
    """A decoder that counts how often it is called."""

    def __init__(self, query: CheckQuery) -> None:
        self.query = query
        self.calls = 0

    def __call__(self) -> CheckQuery:
        self.calls += 1
        return self.query


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(NOW)


class Memo:
    """The checker under test and its inner fake, built the way the server stacks them."""

    def __init__(self, cache: FactCache, clock: MovableClock, answer: Checked | None = None, *,
                 limits: CheckLimits | None = None, policy=None, max_entries: int = 100, on_check=None) -> None:
        self.policy = [policy or POLICY]
        self.inner = FakeChecker(answer or allowed(), on_check)
        self.checker = RememberingChecker(self.inner, cache, lambda: self.policy[0], clock,
                                          limits or CheckLimits(), max_entries)

    def ask(self, request_bytes: bytes | None = b"request", query: CheckQuery = GET_U1) -> Checked:
        return self.checker.check(CheckCall(lambda: query, request_bytes))

    def recall(self, request_bytes: bytes = b"request") -> bool:
        """Asks again with a call that must not be decoded on a hit; True when the memo answered."""
        inner_calls = self.inner.calls
        try:
            checked = self.checker.check(CheckCall(never_decoded, request_bytes))
        except AssertionError:  # decoded: it went to the inner checker
            assert self.inner.calls == inner_calls + 1
            return False
        assert checked.recalled and self.inner.calls == inner_calls
        return True


def test_a_call_without_request_bytes_always_goes_to_the_inner_checker(cache, clock):
    memo = Memo(cache, clock)
    for _ in range(3):
        checked = memo.ask(None)
        assert checked.decision.allowed and not checked.recalled
    assert memo.inner.calls == 3


def test_identical_bytes_are_answered_with_the_kept_decision_without_decoding(cache, clock):
    memo = Memo(cache, clock)
    first = memo.ask()
    assert not first.recalled and memo.inner.calls == 1
    again = memo.checker.check(CheckCall(never_decoded, b"request"))
    assert again.recalled
    assert again.decision is first.decision
    assert again.basis is first.basis
    assert memo.inner.calls == 1


def test_other_bytes_are_decided_anew(cache, clock):
    memo = Memo(cache, clock)
    memo.ask(b"one")
    assert not memo.recall(b"two")
    assert memo.recall(b"one")


def test_a_decision_without_a_basis_is_never_kept(cache, clock):
    """Rejected credentials and limit refusals come without a basis: each call goes to the core."""
    rejected = Checked(deny(Reason.TOKEN_REVOKED, "the API key was revoked"))
    memo = Memo(cache, clock, rejected)
    memo.ask()
    assert not memo.recall()
    refused = Checked(deny(Reason.RATE_LIMIT_EXCEEDED, "too many checks; retry in 1 s", retry_after=1,
                           principal=PRINCIPAL))
    memo.inner.answer = refused
    memo.ask()
    assert not memo.recall()


def test_an_explained_decision_is_never_kept(cache, clock):
    explained = Checked(allowed().decision, (Step("operation", StepOutcome.PASSED),))
    memo = Memo(cache, clock, explained)
    memo.ask(query=replace(GET_U1, explain=True))
    assert not memo.recall()


def test_a_deny_about_a_verified_credential_is_kept(cache, clock):
    plan = plan_check(POLICY, "getUser", [], Resource(user_id="u-9"))
    denied = Checked(deny(Reason.USER_ACCESS_DENIED, "no relation", principal=PRINCIPAL), None,
                     Basis(POLICY, plan, CREDENTIAL))
    memo = Memo(cache, clock, denied)
    memo.ask()
    assert memo.recall()


def test_a_cache_clear_ends_the_kept_decision(cache, clock, unit_of_work):
    memo = Memo(cache, clock)
    memo.ask()
    cache.clear()  # what a write of this process does as it commits
    assert not memo.recall()
    memo.ask()
    unit_of_work.store_revision = 2  # another replica wrote; the refresh loop notices
    cache.refresh()
    assert not memo.recall()


def test_a_change_committed_while_deciding_is_never_kept(cache, clock):
    """The generation is read before the inner check reads any fact: a write meanwhile moves it on."""
    memo = Memo(cache, clock, on_check=cache.clear)
    memo.ask()
    assert not memo.recall()


def test_a_new_policy_object_ends_the_kept_decision(cache, clock):
    memo = Memo(cache, clock)
    memo.ask()
    memo.policy[0] = load_policy(EXAMPLE_POLICY)  # a reload, even of an equal document
    assert not memo.recall()


def test_a_cache_that_is_not_current_answers_nothing_from_memory(cache, clock, monotonic):
    memo = Memo(cache, clock)
    memo.ask()
    monotonic.now += 10
    assert memo.recall()
    monotonic.now += 1  # past the cache's bound with no refresh: the store may be down
    assert not memo.recall()


def test_a_decision_read_for_a_newer_revision_than_the_cache_holds_is_not_kept(cache, clock):
    memo = Memo(cache, clock)
    memo.ask(query=replace(GET_U1, at_least_as_fresh=5))  # the store was read
    assert not memo.recall()
    memo.ask(query=replace(GET_U1, at_least_as_fresh=1))
    assert memo.recall()


def test_the_credentials_expiry_ends_the_kept_decision(cache, clock):
    memo = Memo(cache, clock, allowed(cred=credential(expires_at=NOW + timedelta(seconds=60))))
    memo.ask()
    clock.advance(59)
    assert memo.recall()
    clock.advance(1)
    assert not memo.recall()


def test_a_relations_expiry_ends_the_kept_decision_before_the_credentials(cache, clock, unit_of_work):
    unit_of_work.relations.records[("acme", SubjectType.USER, "u-1")] = RelationRecord(
        "rel_1", "acme", SubjectType.USER, "u-1", RelationStatus.ACTIVE, NOW, NOW,
        expires_at=NOW + timedelta(seconds=30))
    memo = Memo(cache, clock, allowed(cred=credential(expires_at=NOW + timedelta(seconds=60))))
    memo.ask()
    clock.advance(29)
    assert memo.recall()
    clock.advance(1)
    assert not memo.recall()


def test_a_decision_without_any_expiry_is_kept_as_long_as_the_facts_stand(cache, clock):
    memo = Memo(cache, clock)
    memo.ask()
    clock.advance(365 * 24 * 3600)
    assert memo.recall()


def test_the_partner_rate_applies_to_every_recalled_call(cache, clock, monotonic):
    limits = CheckLimits(partner_rate=RateLimiter(rate=1, burst=2), monotonic=monotonic)
    memo = Memo(cache, clock, limits=limits)
    memo.ask()  # the fake core charges nothing: the two recalls below spend the burst
    assert memo.recall()
    assert memo.recall()
    assert not memo.recall(), "a refused hit goes to the core, which answers the refusal"
    monotonic.now += 1
    assert memo.recall()


def test_the_rate_of_a_recalled_call_is_the_kept_partners(cache, clock, monotonic):
    limiter = RateLimiter(rate=1, burst=1)
    memo = Memo(cache, clock, limits=CheckLimits(partner_rate=limiter, monotonic=monotonic))
    memo.ask()
    assert memo.recall()
    assert limiter.retry_after("acme", 1, monotonic.now) == 1, "the hit was counted against acme"


def test_with_the_failed_credential_limit_a_hit_decodes_the_query_for_its_address(cache, clock, monotonic):
    failures = RateLimiter(rate=1, burst=1)
    limits = CheckLimits(failed_credentials=failures, monotonic=monotonic)
    memo = Memo(cache, clock, limits=limits)
    memo.ask()

    decode = Decodes(replace(GET_U1, client_address="10.0.0.1"))
    checked = memo.checker.check(CheckCall(decode, b"request"))
    assert checked.recalled and decode.calls == 1 and memo.inner.calls == 1

    limits.count_failure("10.0.0.9")  # this address just presented a credential that failed
    blocked = Decodes(replace(GET_U1, client_address="10.0.0.9"))
    checked = memo.checker.check(CheckCall(blocked, b"request"))
    assert not checked.recalled
    assert memo.inner.calls == 2, "a blocked address is answered by the core (its refusal)"


def test_max_entries_bounds_what_is_kept(cache, clock):
    memo = Memo(cache, clock, max_entries=2)
    for request in (b"a", b"b", b"c"):
        memo.ask(request)
    assert memo.recall(b"c")
    kept = [request for request in (b"a", b"b") if memo.recall(request)]
    assert kept == [], "the full map was emptied to make room for c"


def test_a_batch_goes_to_the_inner_checker(cache, clock):
    memo = Memo(cache, clock)
    results = memo.checker.check_batch(BatchQuery("", "tg_live_good", [CheckItem("createCourtBooking")]))
    assert memo.inner.batches == 1 and len(results) == 1 and not results[0].recalled
