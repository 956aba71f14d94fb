"""CheckService, the Checker at the core: plan, limits, verify, facts, decide. It knows none of the
shortcuts stacked around it (service/check/caching): it reads whatever CheckFacts it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..domain.credentials import QueryApiKey, parse_presented
from ..domain.decide import CheckInput, CheckPlan, acting_user, decide, relations_looked_at
from ..domain.errors import CredentialRejected, InvalidRequest
from ..domain.explain import ExplainContext, explain
from ..domain.model import AuthenticatedCredential, RelationRecord, SubjectType
from ..domain.policy import Policy, TokenUser
from ..domain.ports import Clock, ReadAgain
from .limits import CheckLimits
from .policy_memo import PolicyMemo
from .ports import CheckFacts, FactReading
from .query import MAX_BATCH, Basis, BatchQuery, CheckCall, Checked, CheckItem

# A check's readings, each whether it is optimistic: optimistic ones (which a change committed
# meanwhile sends back), then one in a transaction, which always stands.
READINGS = (True, True, False)


class CheckService:
    def __init__(self, policy: Callable[[], Policy], facts: CheckFacts, clock: Clock,
                 limits: CheckLimits | None = None) -> None:
        self._policy = policy
        self._facts = facts
        self._clock = clock
        self._limits = limits if limits is not None else CheckLimits()
        self._memo = PolicyMemo(policy())

    def check(self, call: CheckCall) -> Checked:
        query = call.query()
        memo = self._memo_of(self._policy())
        plan = memo.plan(query.operation, query.permissions, query.resource)
        return self._judge_all(memo, [plan], query.authorization, query.api_key, query.query_api_key,
                               query.at_least_as_fresh, query.client_address, query.explain)[0]

    def check_batch(self, batch: BatchQuery) -> list[Checked]:
        memo = self._memo_of(self._policy())
        return self._judge_all(memo, _batch_plans(memo, batch.items), batch.authorization, batch.api_key, None,
                               batch.at_least_as_fresh, batch.client_address, batch.explain)

    def _memo_of(self, policy: Policy) -> PolicyMemo:
        memo = self._memo
        if memo.policy is not policy:  # reloaded: what the old policy derived is of no use
            memo = self._memo = PolicyMemo(policy)
        return memo

    def _judge_all(self, memo: PolicyMemo, plans: list[CheckPlan], authorization: str, api_key: str,
                   query_api_key: QueryApiKey | None, at_least_as_fresh: int, client_address: str,
                   explained: bool) -> list[Checked]:
        judge: _Explainer | Callable[[CheckInput], Checked] = (_Explainer(self._limits.explained) if explained
                                                               else _decided)
        if all(not plan.known or plan.public for plan in plans):
            return [judge(CheckInput(plan, None)) for plan in plans]
        limits = self._limits
        wait = limits.failures_wait(client_address) if limits.on else 0
        if wait:
            return [judge(CheckInput(plan, None, failures_retry_after=wait)) for plan in plans]
        try:
            presented = parse_presented(authorization, api_key, query_api_key)
        except CredentialRejected as rejected:
            limits.count_failure(client_address)
            return [judge(CheckInput(plan, rejected)) for plan in plans]
        if presented is None:
            return [judge(CheckInput(plan, None)) for plan in plans]
        now = self._clock.now()
        charged = ""  # the partner whose rate limit this check has spent: once, however often it reads
        for optimistic in READINGS:
            try:  # ReadAgain: an optimistic reading that could not stand, from any read or its end
                with self._facts.reading(at_least_as_fresh, optimistic) as facts:
                    try:
                        credential = facts.credential(presented, now)
                    except CredentialRejected as rejected:
                        refusal = rejected  # counted below, once the reading has stood
                    else:
                        partner_id = credential.principal.partner_id
                        retry_after = limits.take(partner_id, len(plans)) if limits.on and partner_id != charged else 0
                        if retry_after:  # a refused take spends nothing: a check read again asks again
                            return [judge(CheckInput(plan, credential, retry_after=retry_after)) for plan in plans]
                        charged = partner_id
                        policy = memo.policy
                        grants = memo.grants(credential)
                        # An explainer reports the relations looked at, as this check read them.
                        explainer = judge.reading(facts) if isinstance(judge, _Explainer) else None
                        # Each Basis made as a tuple of its type: NamedTuple's constructor is a Python frame.
                        checked = []
                        for plan in plans:
                            active = frozenset(subject_type for subject_type in plan.relations
                                               if facts.is_active(partner_id, subject_type,
                                                                  plan.resource.subject_id(subject_type), now))
                            related = (plan.token_user is TokenUser.RELATED
                                       and _token_user_related(plan, credential, facts, now))
                            check = CheckInput(plan, credential, grants, active, policy.scope_names,
                                               token_user_related=related)
                            checked.append(explainer(check) if explainer is not None else Checked(
                                decide(check), None, tuple.__new__(Basis, (policy, plan, credential))))
                        return checked
            except ReadAgain:
                continue
            limits.count_failure(client_address)
            return [judge(CheckInput(plan, refusal)) for plan in plans]
        raise AssertionError("unreachable: the last reading is not optimistic")


def _batch_plans(memo: PolicyMemo, items: list[CheckItem]) -> list[CheckPlan]:
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidRequest(f"a batch has 1 to {MAX_BATCH} items", field="items")
    plans = []
    for index, item in enumerate(items):
        try:
            plans.append(memo.plan(item.operation, item.permissions, item.resource))
        except InvalidRequest as error:
            raise InvalidRequest(f"items[{index}]: {error.message}", field=f"items[{index}].{error.field}") from None
    return plans


def _token_user_related(plan: CheckPlan, credential: AuthenticatedCredential, facts: FactReading,
                        now: datetime) -> bool:
    """Whether the user the token acts for has an active relation with the token's partner: the fact
    a `token_user: related` operation needs, read from the same facts as the resource's relations."""
    user = acting_user(credential, plan.user_claim)
    return user is not None and facts.is_active(credential.principal.partner_id, SubjectType.USER, user, now)


def _decided(check: CheckInput) -> Checked:
    """The judge of a plain check that ends before its facts are read: decide(), with no basis."""
    return Checked(decide(check))


class _Explainer:
    """The judge of an explained check: decide() with the steps that led to the decision, never a
    basis (an explanation is of a decision made now, never kept). Once the credential is proven it
    is bound to the facts the decision reads (reading()), so it reports the records of the
    relations the decision looked at, as the decision saw them."""

    def __init__(self, context: ExplainContext, facts: FactReading | None = None) -> None:
        self._context = context
        self._facts = facts

    def reading(self, facts: FactReading) -> _Explainer:
        return _Explainer(self._context, facts)

    def __call__(self, check: CheckInput) -> Checked:
        credential = check.credential
        context = self._context
        if self._facts is not None and isinstance(credential, AuthenticatedCredential):
            partner_id = credential.principal.partner_id
            relations: dict[tuple[SubjectType, str], RelationRecord | None] = {
                (subject_type, subject_id): self._facts.find_open(partner_id, subject_type, subject_id)
                for subject_type, subject_id in relations_looked_at(check.plan, credential)}
            context = replace(context, relations=relations)
        decision, steps = explain(check, context)
        return Checked(decision, steps)
