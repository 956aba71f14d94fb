"""Why a check decided as it did: the steps decide() evaluates, in its order, with the facts each used.

Pure, as decide() is: explain() judges each step from the very CheckInput the decision is made
from, with the same predicates, so the explanation cannot disagree with the decision (the unit
tests hold the two side by side on every case). What it reports beyond that input, the use case
looks up with the other facts: the records of the relations the decision looked at.

Facts are (name, value) string pairs, never a secret: a credential is named by its partner, its
id and its kind, never by its token or key; lists are space-separated.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from .decide import CheckInput, acting_user, decide, token_user_denial
from .decision import Decision
from .errors import CredentialRejected
from .model import AuthenticatedCredential, RelationRecord, SubjectType
from .policy import TokenUser

# An unknown operation is quoted back at most this long (it is request text of any length).
MAX_OPERATION_LENGTH = 200


class StepOutcome(enum.StrEnum):
    # The step's condition holds (or, for a public operation, the step decided the allow).
    PASSED = "passed"
    # The step's condition does not hold: it decided the deny.
    FAILED = "failed"
    # Not evaluated: the operation does not need it, the limit is off, or an earlier step decided.
    SKIPPED = "skipped"


Facts = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Step:
    name: str
    outcome: StepOutcome
    facts: Facts = ()


class Explained(NamedTuple):
    decision: Decision
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class ExplainContext:
    """What an explanation reports beyond the CheckInput: whether each rate limit is on, and the
    relations the decision looked at, by (subject type, subject id): the pending or active
    relation record, or None when there is none."""

    failure_limit: bool = False
    rate_limit: bool = False
    relations: Mapping[tuple[SubjectType, str], RelationRecord | None] = field(default_factory=dict)


def explain(check: CheckInput, context: ExplainContext = ExplainContext()) -> Explained:
    """decide(check), with every step in the order decide() runs them: the first failure decides,
    and the steps after it (or after a public operation's allow) are skipped."""
    steps: list[Step] = []
    ended = ""
    for name, judge in _STEPS:
        if ended:
            steps.append(Step(name, StepOutcome.SKIPPED, (("why", ended),)))
            continue
        step = judge(check, context)
        steps.append(step)
        if step.outcome is StepOutcome.FAILED:
            ended = f"the {name} step decided"
        elif name == "operation" and check.plan.public:
            ended = "the operation is public"
    return Explained(decide(check), tuple(steps))


def _operation(check: CheckInput, context: ExplainContext) -> Step:
    plan = check.plan
    facts = (("operation", plan.operation[:MAX_OPERATION_LENGTH]), ("known", _yes(plan.known)),
             ("public", _yes(plan.public)), ("needs", _listed(plan.permissions)))
    return Step("operation", StepOutcome.PASSED if plan.known else StepOutcome.FAILED, facts)


def _failed_credential_limit(check: CheckInput, context: ExplainContext) -> Step:
    return _limit("failed_credential_limit", context.failure_limit, check.failures_retry_after)


def _credential(check: CheckInput, context: ExplainContext) -> Step:
    credential = check.credential
    if credential is None:
        return Step("credential", StepOutcome.FAILED, (("presented", "none"),))
    if isinstance(credential, CredentialRejected):
        return Step("credential", StepOutcome.FAILED, (("presented", "yes"), ("reason", credential.reason)))
    principal = credential.principal
    return Step("credential", StepOutcome.PASSED, (
        ("presented", "yes"), ("partner_id", principal.partner_id), ("credential_id", principal.credential_id),
        ("credential_kind", principal.kind.value)))


def _rate_limit(check: CheckInput, context: ExplainContext) -> Step:
    return _limit("rate_limit", context.rate_limit, check.retry_after)


def _limit(name: str, enabled: bool, wait: int) -> Step:
    """A token-bucket step: skipped when the limit is off, failed when it made the caller wait."""
    if not enabled and not wait:
        return Step(name, StepOutcome.SKIPPED, (("why", "the limit is off"),))
    return Step(name, StepOutcome.FAILED if wait else StepOutcome.PASSED,
                (("enabled", "yes"), ("retry_after_seconds", str(wait))))


def _permissions(check: CheckInput, context: ExplainContext) -> Step:
    plan = check.plan
    held = check.grants.listed(check.known_scopes)
    missing = [p for p in plan.permissions if not check.grants.allows(p)]
    return Step("permissions", StepOutcome.FAILED if missing else StepOutcome.PASSED,
                (("needed", _listed(plan.permissions)), ("held", _listed(held)), ("missing", _listed(missing))))


def _user_relation(check: CheckInput, context: ExplainContext) -> Step:
    return _relation("user_relation", SubjectType.USER, check, context)


def _organization_relation(check: CheckInput, context: ExplainContext) -> Step:
    return _relation("organization_relation", SubjectType.ORGANIZATION, check, context)


def _relation(name: str, subject_type: SubjectType, check: CheckInput, context: ExplainContext) -> Step:
    plan = check.plan
    if subject_type not in plan.relations:
        return Step(name, StepOutcome.SKIPPED, (("why", "the operation needs no such relation"),))
    subject_id = plan.resource.subject_id(subject_type)
    outcome = StepOutcome.PASSED if subject_type in check.active_relations else StepOutcome.FAILED
    return Step(name, outcome, (("subject_type", subject_type.value), ("subject_id", subject_id),
                                *_relation_facts(context, subject_type, subject_id)))


def _token_user(check: CheckInput, context: ExplainContext) -> Step:
    plan = check.plan
    if plan.token_user is None:
        return Step("token_user", StepOutcome.SKIPPED, (("why", "the operation demands no token user"),))
    credential = check.credential
    assert isinstance(credential, AuthenticatedCredential)  # steps before it passed
    user = acting_user(credential, plan.user_claim)
    facts = [("demand", plan.token_user.value), ("claim", plan.user_claim or ""), ("token_user", user or "none")]
    if plan.token_user is TokenUser.SELF:
        facts.append(("user_id", plan.resource.user_id))
    elif user is not None:
        facts.extend(_relation_facts(context, SubjectType.USER, user))
    denied = token_user_denial(plan, credential, check.token_user_related)
    return Step("token_user", StepOutcome.PASSED if denied is None else StepOutcome.FAILED, tuple(facts))


def _customer(check: CheckInput, context: ExplainContext) -> Step:
    plan = check.plan
    if not plan.check_customer:
        return Step("customer", StepOutcome.SKIPPED, (("why", "the request names no customer number"),))
    credential = check.credential
    assert isinstance(credential, AuthenticatedCredential)  # steps before it passed
    allowed = plan.resource.customer_id in credential.customer_numbers
    return Step("customer", StepOutcome.PASSED if allowed else StepOutcome.FAILED, (
        ("customer_id", plan.resource.customer_id),
        ("credential_customer_ids", " ".join(sorted(credential.customer_numbers)))))


def _relation_facts(context: ExplainContext, subject_type: SubjectType, subject_id: str) -> Facts:
    if (subject_type, subject_id) not in context.relations:
        return ()
    record = context.relations[(subject_type, subject_id)]
    if record is None:
        return (("relation_status", "none"),)
    facts: Facts = (("relation_id", record.id), ("relation_status", record.status.value))
    if record.expires_at is not None:
        facts += (("expires_at", _iso(record.expires_at)),)
    return facts


def _listed(permissions: Iterable[object]) -> str:
    return " ".join(str(p) for p in permissions)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # stores may hand back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# In decide()'s order (the unit tests hold them side by side).
_STEPS: tuple[tuple[str, Callable[[CheckInput, ExplainContext], Step]], ...] = (
    ("operation", _operation),
    ("failed_credential_limit", _failed_credential_limit),
    ("credential", _credential),
    ("rate_limit", _rate_limit),
    ("permissions", _permissions),
    ("user_relation", _user_relation),
    ("token_user", _token_user),
    ("organization_relation", _organization_relation),
    ("customer", _customer),
)
