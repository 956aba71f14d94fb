"""CheckService, the core of Check, against a fake CheckFacts: plan, limits, verify, facts, decide,
with every fact it reads counted."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from service.check.limits import CheckLimits
from service.check.query import Basis, BatchQuery, CheckCall, CheckItem, CheckQuery
from service.check.service import CheckService
from service.domain.decide import Resource
from service.domain.decision import ALLOW_PUBLIC, Reason
from service.domain.errors import CredentialRejected, InvalidRequest
from service.domain.explain import StepOutcome
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
from service.domain.policy import parse_policy
from service.domain.ports import ReadAgain
from service.domain.rate_limit import RateLimiter
from service.policy_file import load_policy
from tests.support.clock import MovableClock

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

GOOD_KEY = "tg_live_good"
REVOKED_KEY = "tg_live_revoked"

ACME = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read", "court-booking:write"), (), NOW)
CREDENTIAL = AuthenticatedCredential(Principal("acme", "key_1", CredentialKind.API_KEY), ACME)
REVOKED = CredentialRejected("the API key was revoked", reason="token_revoked")
ACTIVE_RELATION = RelationRecord("rel_1", "acme", SubjectType.USER, "u-1", RelationStatus.ACTIVE, NOW, NOW)


class FakeReading:
    """One FactReading over the fake's facts; counts what it is asked."""

    def __init__(self, facts: FakeFacts, optimistic: bool) -> None:
        self._facts = facts
        self._optimistic = optimistic

    def __enter__(self) -> FakeReading:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._facts.closed += 1
        if kind is None and self._optimistic and self._facts.moves:  # as a moved revision ends one
            self._facts.moves -= 1
            raise ReadAgain(7)

    def credential(self, presented, now):
        self._facts.credential_calls.append(presented.value)
        found = self._facts.credentials.get(presented.value)
        if found is None:
            raise CredentialRejected("unknown key", reason="invalid_token")
        if isinstance(found, CredentialRejected):
            raise found
        return found

    def is_active(self, partner_id, subject_type, subject_id, now):
        return (partner_id, subject_type, subject_id) in self._facts.active

    def find_open(self, partner_id, subject_type, subject_id):
        self._facts.find_open_calls += 1
        return self._facts.open_relations.get((partner_id, subject_type, subject_id))


class FakeFacts:
    """A CheckFacts held in memory: presented credential value -> what verifying it gives, and the
    (partner, subject type, subject id) triples with an active relation."""

    def __init__(self) -> None:
        self.credentials: dict[str, AuthenticatedCredential | CredentialRejected] = {
            GOOD_KEY: CREDENTIAL, REVOKED_KEY: REVOKED}
        self.active = {("acme", SubjectType.USER, "u-1")}
        self.open_relations = {("acme", SubjectType.USER, "u-1"): ACTIVE_RELATION}
        self.readings: list[int] = []  # the at_least_as_fresh of each reading opened
        self.optimistic: list[bool] = []  # whether each reading opened was optimistic
        self.moves = 0  # how many optimistic readings to come end in ReadAgain
        self.closed = 0
        self.credential_calls: list[str] = []
        self.find_open_calls = 0

    def reading(self, at_least_as_fresh: int, optimistic: bool = False) -> FakeReading:
        self.readings.append(at_least_as_fresh)
        self.optimistic.append(optimistic)
        return FakeReading(self, optimistic)


@pytest.fixture(scope="module")
def policy():
    return load_policy(EXAMPLE_POLICY)


@pytest.fixture
def facts():
    return FakeFacts()


class Monotonic:
    """A monotonic clock for the rate limits that stands still unless moved."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def service_of(policy, facts, limits: CheckLimits | None = None, policy_source=None) -> CheckService:
    return CheckService(policy_source or (lambda: policy), facts, MovableClock(NOW), limits)


def check(service: CheckService, **query):
    return service.check(CheckCall.of(CheckQuery(**query)))


GET_U1 = dict(operation="getUser", resource=Resource(user_id="u-1"))


def test_a_public_or_unknown_operation_opens_no_reading(policy, facts):
    service = service_of(policy, facts)
    public = check(service, operation="health", api_key=GOOD_KEY)
    unknown = check(service, operation="noSuchOperation", api_key=GOOD_KEY)
    assert public.decision is ALLOW_PUBLIC
    assert unknown.decision.reason is Reason.UNKNOWN_OPERATION
    assert public.basis is None and unknown.basis is None
    assert facts.readings == [] and facts.credential_calls == []


def test_a_check_without_a_credential_is_missing_token_and_reads_nothing(policy, facts):
    checked = check(service_of(policy, facts), **GET_U1)
    assert checked.decision.reason is Reason.MISSING_TOKEN
    assert checked.basis is None
    assert facts.readings == []


def test_the_reading_is_asked_for_the_revision_the_query_names(policy, facts):
    check(service_of(policy, facts), api_key=GOOD_KEY, at_least_as_fresh=42, **GET_U1)
    assert facts.readings == [42]
    assert facts.closed == 1, "the reading is closed once the check is decided"


def test_a_rejected_credential_is_denied_with_its_reason_and_no_principal(policy, facts):
    checked = check(service_of(policy, facts), api_key=REVOKED_KEY, **GET_U1)
    assert not checked.decision.allowed
    assert checked.decision.reason is Reason.TOKEN_REVOKED
    assert checked.decision.principal is None
    assert checked.basis is None


def test_a_rejected_credential_is_charged_and_a_blocked_address_is_refused_before_any_reading(policy, facts):
    monotonic = Monotonic()
    limits = CheckLimits(failed_credentials=RateLimiter(rate=0.5, burst=1), monotonic=monotonic)
    service = service_of(policy, facts, limits)

    first = check(service, api_key=REVOKED_KEY, client_address="10.0.0.1", **GET_U1)
    assert first.decision.reason is Reason.TOKEN_REVOKED
    assert len(facts.readings) == 1

    blocked = check(service, api_key=GOOD_KEY, client_address="10.0.0.1", **GET_U1)
    assert blocked.decision.reason is Reason.RATE_LIMIT_EXCEEDED
    assert blocked.decision.retry_after == 2  # one token at 0.5 per second
    assert blocked.decision.principal is None and blocked.basis is None
    assert len(facts.readings) == 1, "a blocked address's credential is not verified"

    other = check(service, api_key=GOOD_KEY, client_address="10.0.0.2", **GET_U1)
    assert other.decision.allowed, "another address is not held by this one's failures"

    monotonic.now += 2
    assert check(service, api_key=GOOD_KEY, client_address="10.0.0.1", **GET_U1).decision.allowed


def test_a_malformed_credential_header_is_charged_without_opening_a_reading(policy, facts):
    limits = CheckLimits(failed_credentials=RateLimiter(rate=1, burst=1), monotonic=Monotonic())
    service = service_of(policy, facts, limits)
    malformed = check(service, authorization="Bearer two tokens", client_address="10.0.0.1", **GET_U1)
    assert malformed.decision.reason is Reason.INVALID_TOKEN
    assert facts.readings == []
    refused = check(service, api_key=GOOD_KEY, client_address="10.0.0.1", **GET_U1)
    assert refused.decision.reason is Reason.RATE_LIMIT_EXCEEDED
    assert facts.readings == []


def test_a_verified_credential_is_never_charged_to_the_failed_credential_limit(policy, facts):
    limits = CheckLimits(failed_credentials=RateLimiter(rate=1, burst=1), monotonic=Monotonic())
    service = service_of(policy, facts, limits)
    for _ in range(3):
        assert check(service, api_key=GOOD_KEY, client_address="10.0.0.1", **GET_U1).decision.allowed


def test_a_partner_past_its_rate_is_refused_with_its_principal_and_no_basis(policy, facts):
    limits = CheckLimits(partner_rate=RateLimiter(rate=1, burst=1), monotonic=Monotonic())
    service = service_of(policy, facts, limits)
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    refused = check(service, api_key=GOOD_KEY, **GET_U1)
    assert refused.decision.reason is Reason.RATE_LIMIT_EXCEEDED
    assert refused.decision.retry_after == 1
    assert refused.decision.principal == CREDENTIAL.principal
    assert refused.basis is None, "a decision a limit refused is never kept"


def test_an_allow_carries_the_basis_it_was_decided_on(policy, facts):
    checked = check(service_of(policy, facts), api_key=GOOD_KEY, **GET_U1)
    assert checked.decision.allowed
    assert checked.decision.principal == CREDENTIAL.principal
    assert isinstance(checked.basis, Basis)
    assert checked.basis.policy is policy
    assert checked.basis.credential is CREDENTIAL
    assert checked.basis.plan.operation == "getUser"
    assert checked.basis.plan.resource == Resource(user_id="u-1")
    assert checked.basis.plan.relations == frozenset({SubjectType.USER})
    assert checked.steps is None and not checked.recalled


def test_an_inactive_user_relation_is_user_access_denied_with_a_basis(policy, facts):
    checked = check(service_of(policy, facts), api_key=GOOD_KEY, operation="getUser",
                    resource=Resource(user_id="u-2"))
    assert checked.decision.reason is Reason.USER_ACCESS_DENIED
    assert checked.decision.principal == CREDENTIAL.principal
    assert checked.basis is not None, "a deny about a verified credential rests on facts too"
    assert checked.basis.plan.resource.user_id == "u-2"


def test_a_permission_the_partner_lacks_is_insufficient_scope(policy, facts):
    checked = check(service_of(policy, facts), api_key=GOOD_KEY, operation="updateUser",
                    resource=Resource(user_id="u-1"))
    assert checked.decision.reason is Reason.INSUFFICIENT_SCOPE
    assert checked.decision.missing_scope == "user:write"


def test_a_batch_verifies_its_credential_once_in_one_reading(policy, facts):
    batch = BatchQuery(authorization="", api_key=GOOD_KEY, items=[
        CheckItem("getUser", resource=Resource(user_id="u-1")),
        CheckItem("getUser", resource=Resource(user_id="u-2")),
        CheckItem("createCourtBooking"),
    ])
    results = service_of(policy, facts).check_batch(batch)
    assert [r.decision.allowed for r in results] == [True, False, True]
    assert results[1].decision.reason is Reason.USER_ACCESS_DENIED
    assert len(facts.readings) == 1
    assert facts.credential_calls == [GOOD_KEY]
    assert all(r.basis is not None and r.basis.credential is CREDENTIAL for r in results)


def test_a_batch_is_charged_to_the_partner_rate_per_item(policy, facts):
    limits = CheckLimits(partner_rate=RateLimiter(rate=1, burst=3), monotonic=Monotonic())
    service = service_of(policy, facts, limits)
    items = [CheckItem("createCourtBooking")] * 2
    assert all(r.decision.allowed for r in service.check_batch(BatchQuery("", GOOD_KEY, items)))
    refused = service.check_batch(BatchQuery("", GOOD_KEY, items))  # one check left, two asked
    assert [r.decision.reason for r in refused] == [Reason.RATE_LIMIT_EXCEEDED] * 2


@pytest.mark.parametrize("bad_item, field", [
    (CheckItem("getUser"), "items[1].resource.user_id"),
    (CheckItem("getUser", resource=Resource(user_id="u\x00")), "items[1].resource.user_id"),
    (CheckItem("getUser", permissions=["no such permission"]), "items[1].permissions[0]"),
])
def test_an_invalid_batch_item_is_named_by_its_index_and_nothing_is_read(policy, facts, bad_item, field):
    batch = BatchQuery("", GOOD_KEY, [CheckItem("createCourtBooking"), bad_item])
    with pytest.raises(InvalidRequest) as raised:
        service_of(policy, facts).check_batch(batch)
    assert raised.value.field == field
    assert raised.value.message.startswith("items[1]: ")
    assert facts.readings == []


@pytest.mark.parametrize("count", [0, 101])
def test_a_batch_has_one_to_a_hundred_items(policy, facts, count):
    with pytest.raises(InvalidRequest) as raised:
        service_of(policy, facts).check_batch(BatchQuery("", GOOD_KEY, [CheckItem("health")] * count))
    assert raised.value.field == "items"


def test_an_invalid_single_check_raises_with_the_field(policy, facts):
    with pytest.raises(InvalidRequest) as raised:
        check(service_of(policy, facts), api_key=GOOD_KEY, operation="getUser")
    assert raised.value.field == "resource.user_id"


def test_an_explained_check_gives_its_steps_and_never_a_basis(policy, facts):
    service = service_of(policy, facts)
    plain = check(service, api_key=GOOD_KEY, **GET_U1)
    explained = check(service, api_key=GOOD_KEY, explain=True, **GET_U1)
    assert explained.decision == plain.decision
    assert explained.basis is None
    assert explained.steps is not None
    steps = {step.name: step for step in explained.steps}
    assert steps["credential"].outcome is StepOutcome.PASSED
    assert steps["user_relation"].outcome is StepOutcome.PASSED
    assert ("relation_id", "rel_1") in steps["user_relation"].facts, "the relation record read by find_open"


def test_an_explained_deny_gives_its_steps_and_never_a_basis(policy, facts):
    explained = check(service_of(policy, facts), api_key=GOOD_KEY, explain=True, operation="getUser",
                      resource=Resource(user_id="u-2"))
    assert explained.decision.reason is Reason.USER_ACCESS_DENIED
    assert explained.basis is None
    steps = {step.name: step for step in explained.steps}
    assert steps["user_relation"].outcome is StepOutcome.FAILED
    assert ("relation_status", "none") in steps["user_relation"].facts
    assert steps["customer"].outcome is StepOutcome.SKIPPED


def test_an_explained_batch_gives_steps_for_every_item_and_no_basis(policy, facts):
    batch = BatchQuery("", GOOD_KEY, [CheckItem("getUser", resource=Resource(user_id="u-1")),
                                      CheckItem("health")], explain=True)
    results = service_of(policy, facts).check_batch(batch)
    assert all(r.steps and r.basis is None for r in results)
    assert [r.decision.allowed for r in results] == [True, True]


def test_an_explained_refusal_reports_which_limit_is_on(policy, facts):
    limits = CheckLimits(partner_rate=RateLimiter(rate=1, burst=1), monotonic=Monotonic())
    service = service_of(policy, facts, limits)
    check(service, api_key=GOOD_KEY, **GET_U1)
    explained = check(service, api_key=GOOD_KEY, explain=True, **GET_U1)
    steps = {step.name: step for step in explained.steps}
    assert explained.decision.reason is Reason.RATE_LIMIT_EXCEEDED and explained.basis is None
    assert steps["rate_limit"].outcome is StepOutcome.FAILED
    assert steps["failed_credential_limit"].outcome is StepOutcome.SKIPPED


def test_a_reloaded_policy_is_used_at_once(policy, facts):
    """The policy callable returns a new object: plans made under the old one are not reused."""
    document = yaml.safe_load(EXAMPLE_POLICY.read_text())
    changed = copy.deepcopy(document)
    changed["operations"]["getUser"] = {"public": True}
    reloaded = parse_policy(changed)
    current = [policy]
    service = service_of(policy, facts, policy_source=lambda: current[0])

    before = check(service, api_key=GOOD_KEY, **GET_U1)
    assert before.decision.allowed and before.basis.policy is policy
    assert len(facts.readings) == 1

    current[0] = reloaded
    after = check(service, api_key=GOOD_KEY, **GET_U1)
    assert after.decision is ALLOW_PUBLIC, "the plan is made anew under the reloaded policy"
    assert len(facts.readings) == 1, "a public operation reads nothing"

    current[0] = policy
    again = check(service, api_key=GOOD_KEY, **GET_U1)
    assert again.decision.allowed and again.basis.policy is policy


def test_a_reloaded_policy_changes_the_grants_at_once(policy, facts):
    changed = yaml.safe_load(EXAMPLE_POLICY.read_text())
    changed["operations"]["getUser"]["permissions"] = ["order:read"]
    current = [policy]
    service = service_of(policy, facts, policy_source=lambda: current[0])
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    current[0] = parse_policy(changed)
    denied = check(service, api_key=GOOD_KEY, **GET_U1)
    assert denied.decision.reason is Reason.INSUFFICIENT_SCOPE
    assert denied.basis.policy is current[0]


# -- readings read again ---------------------------------------------------------------------------

def test_a_check_reads_optimistically_first_and_again_when_its_reading_cannot_stand(policy, facts):
    service = service_of(policy, facts)
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    assert facts.optimistic == [True], "one optimistic reading when it stands"
    facts.optimistic.clear()
    facts.moves = 1
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    assert facts.optimistic == [True, True]
    facts.optimistic.clear()
    facts.moves = 5  # every optimistic reading moves: the last reading is a transaction's
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    assert facts.optimistic == [True, True, False]


def test_a_check_read_again_is_charged_once_to_its_partner_and_its_failure_counted_once(policy, facts):
    monotonic = Monotonic()
    limits = CheckLimits(partner_rate=RateLimiter(rate=1, burst=2), failed_credentials=RateLimiter(rate=1, burst=2),
                         monotonic=monotonic)
    service = service_of(policy, facts, limits)
    facts.moves = 2
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed
    assert len(facts.readings) == 3
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.allowed, "the first check spent one of two"
    assert check(service, api_key=GOOD_KEY, **GET_U1).decision.reason is Reason.RATE_LIMIT_EXCEEDED
    facts.moves = 2
    assert check(service, api_key=REVOKED_KEY, client_address="10.0.0.1", **GET_U1).decision.reason is (
        Reason.TOKEN_REVOKED)
    assert check(service, api_key=REVOKED_KEY, client_address="10.0.0.1", **GET_U1).decision.reason is (
        Reason.TOKEN_REVOKED), "the first rejection counted one failure of two"
    assert check(service, api_key=GOOD_KEY, client_address="10.0.0.1", **GET_U1).decision.reason is (
        Reason.RATE_LIMIT_EXCEEDED)
