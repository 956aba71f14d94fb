"""Check: requests in, Decisions out. A batch verifies its one credential once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..domain.credentials import QueryApiKey, parse_presented
from ..domain.decide import (
    CheckInput,
    CheckPlan,
    Resource,
    acting_user,
    decide,
    effective_grants,
    plan_check,
    relations_looked_at,
)
from ..domain.decision import Decision
from ..domain.errors import CredentialRejected, InvalidRequest
from ..domain.explain import ExplainContext, Explained, explain
from ..domain.model import AuthenticatedCredential, RelationRecord, SubjectType
from ..domain.policy import Policy, TokenUser
from ..domain.ports import Clock, CredentialVerifier, Repositories, UnitOfWork
from ..domain.rate_limit import RateLimiter
from ..domain.scopes import GrantSet, Permission
from .decision_memo import DecisionMemo
from .fact_cache import FactCache

MAX_BATCH = 100
# Credentials whose effective grants are kept (see CheckService._grants).
MAX_GRANTS_MEMO = 4096
# Request shapes whose plans are kept (see CheckService._plan).
MAX_PLANS_MEMO = 4096


@dataclass(frozen=True)
class CheckItem:
    operation: str = ""
    permissions: list[str] = field(default_factory=list)
    resource: Resource = Resource()


@dataclass(frozen=True)
class CheckQuery:
    authorization: str = ""
    api_key: str = ""
    operation: str = ""
    permissions: list[str] = field(default_factory=list)
    resource: Resource = Resource()
    # A store revision (from ManageRelation) the decision must reflect; 0 for "any recent one".
    at_least_as_fresh: int = 0
    # Where the credential came from, for the failed-credential limit ("" when it is off).
    client_address: str = ""
    # ext_authz only: the API key query parameter of a route that has one, when the request sent
    # it; used only when neither credential header carries anything.
    query_api_key: QueryApiKey | None = None


class CheckService:
    def __init__(
        self,
        policy: Callable[[], Policy],
        unit_of_work: UnitOfWork,
        verifier: CredentialVerifier,
        clock: Clock,
        cache: FactCache | None = None,
        limiter: RateLimiter | None = None,
        failed_credentials: RateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        memo: DecisionMemo | None = None,
    ) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._verifier = verifier
        self._clock = clock
        self._cache = cache
        self._limiter = limiter
        # Per client address, charged one token per credential that fails; an address without a
        # token left is refused before verification, which is where a flood of forged tokens
        # would spend our CPU (a signature check each).
        self._failures = failed_credentials
        self._monotonic = monotonic
        # Decisions of identical earlier checks (see recall()), over the same fact cache: kept
        # only on the cache's path.
        self._memo = memo
        # Effective grants (and their sorted listing) depend only on the policy and the verified
        # credential, and on a fact-cache hit both are the very objects of the previous check of
        # that token: so they are computed once per pair, found by identity. Each entry holds the
        # pair itself, so its ids cannot be reused by other objects while the entry is there.
        # Bounded (credentials read without the cache are new objects every time); a plain dict,
        # since racing threads store equal values.
        self._grants: dict[tuple[int, int], tuple[Policy, AuthenticatedCredential, GrantSet,
                                                  tuple[Permission, ...]]] = {}
        self._plans: tuple[Policy | None, dict[tuple, CheckPlan]] = (None, {})

    @property
    def limits_failed_credentials(self) -> bool:
        """Whether callers should say where credentials come from (CheckQuery.client_address)."""
        return self._failures is not None

    @property
    def remembers_decisions(self) -> bool:
        """Whether callers should pass a memo key to check() and try recall() first."""
        return self._memo is not None

    def check(self, query: CheckQuery, memo_key: bytes | None = None) -> Decision:
        """Raises InvalidRequest for a malformed query and StoreUnavailable when the store is down;
        every other outcome, allow or deny, is the returned Decision. `memo_key`: a digest of the
        whole request, under which the decision is kept for recall()."""
        policy = self._policy()
        plan = self._plan(policy, query.operation, query.permissions, query.resource)
        return self._decide_all(policy, [plan], query.authorization, query.api_key,
                                query.at_least_as_fresh, query.client_address, memo_key, query.query_api_key)[0]

    def explain(self, query: CheckQuery) -> Explained:
        """As check(), with the steps that led to the decision (domain/explain.py). Never answered
        from, nor kept in, the decision memo: an explanation is of a decision made now."""
        policy = self._policy()
        plan = self._plan(policy, query.operation, query.permissions, query.resource)
        return self._decide_all(policy, [plan], query.authorization, query.api_key, query.at_least_as_fresh,
                                query.client_address, None, query.query_api_key, self._explainer())[0]

    def _explainer(self) -> _Explainer:
        limits = ExplainContext(failure_limit=self._failures is not None, rate_limit=self._limiter is not None)
        return _Explainer(limits)

    def recall(self, memo_key: bytes, client_address: str = "") -> Decision | None:
        """The decision check() made for an identical request (the same `memo_key`), while every
        fact behind it still stands (service/usecases/decision_memo.py); None: call check(). The
        rate limits apply as in check(): this call is counted, and a refused one is left to
        check() to answer (a refused take spends nothing, so it is not counted twice)."""
        memo = self._memo
        if memo is None:
            return None
        kept = memo.recall(memo_key, self._policy(), self._clock.now)
        if kept is None:
            return None
        if self._failures is not None and self._failures.blocked_for(client_address, self._monotonic()):
            return None
        if self._limiter is not None and self._limiter.retry_after(kept.partner_id, 1, self._monotonic()):
            return None
        return kept.decision

    def _plan(self, policy: Policy, operation: str, permissions: list[str], resource: Resource) -> CheckPlan:
        """plan_check, kept per request shape: it is pure in (policy, operation, permissions,
        resource), and a gateway asks the same requests again and again. Only valid plans
        are kept (an invalid request raises every time); bounded, and emptied with a new policy."""
        key = (operation, tuple(permissions), resource)
        memo = self._plans  # (policy, plans) swapped as one object, so a reader never mixes two policies
        if memo[0] is policy:
            found = memo[1].get(key)
            if found is not None:
                return found
        plan = plan_check(policy, operation, permissions, resource)
        if memo[0] is not policy or len(memo[1]) >= MAX_PLANS_MEMO:
            memo = self._plans = (policy, {})
        memo[1][key] = plan
        return plan

    def check_batch(self, authorization: str, api_key: str, items: list[CheckItem],
                    at_least_as_fresh: int = 0, client_address: str = "") -> list[Decision]:
        """As check() for each item; an InvalidRequest names the item ("items[3].resource.user_id")."""
        policy = self._policy()
        return self._decide_all(policy, self._batch_plans(policy, items), authorization, api_key, at_least_as_fresh,
                                client_address)

    def explain_batch(self, authorization: str, api_key: str, items: list[CheckItem],
                      at_least_as_fresh: int = 0, client_address: str = "") -> list[Explained]:
        """As check_batch(), each decision with its steps (see explain())."""
        policy = self._policy()
        return self._decide_all(policy, self._batch_plans(policy, items), authorization, api_key, at_least_as_fresh,
                                client_address, judge=self._explainer())

    def _batch_plans(self, policy: Policy, items: list[CheckItem]) -> list[CheckPlan]:
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(f"a batch has 1 to {MAX_BATCH} items", field="items")
        plans = []
        for index, item in enumerate(items):
            try:
                plans.append(self._plan(policy, item.operation, item.permissions, item.resource))
            except InvalidRequest as error:
                raise InvalidRequest(f"items[{index}]: {error.message}",
                                     field=f"items[{index}].{error.field}") from None
        return plans

    def _decide_all(self, policy: Policy, plans: list[CheckPlan], authorization: str, api_key: str,
                    at_least_as_fresh: int, client_address: str, memo_key: bytes | None = None,
                    query_api_key: QueryApiKey | None = None,
                    judge: Callable[[CheckInput], Any] = decide) -> list[Any]:
        """Decisions (`judge` decide), or Explained ones (an _Explainer; then `memo_key` is None:
        nothing explained is kept)."""
        if all(not plan.known or plan.public for plan in plans):
            return [judge(CheckInput(plan, None)) for plan in plans]
        if self._failures is not None:
            wait = self._failures.blocked_for(client_address, self._monotonic())
            if wait:
                return [judge(CheckInput(plan, None, failures_retry_after=wait)) for plan in plans]
        try:
            presented = parse_presented(authorization, api_key, query_api_key)
        except CredentialRejected as rejected:
            self._count_failure(client_address)
            return [judge(CheckInput(plan, rejected)) for plan in plans]
        if presented is None:
            return [judge(CheckInput(plan, None)) for plan in plans]
        now = self._clock.now()
        if self._cache is not None and self._fresh_enough(at_least_as_fresh):
            cache = self._cache
            generation = cache.generation  # before any fact is read (see DecisionMemo.remember)
            facts = cache.facts

            def verify() -> AuthenticatedCredential:
                return self._verifier.verify(presented, facts, now)

            decisions, verified = self._decide(policy, plans, lambda: cache.credential(presented.value, now, verify),
                                               facts, now, client_address, judge)
            if memo_key is not None and verified is not None and self._memo is not None:
                self._remember(memo_key, generation, policy, plans[0], verified, decisions[0])
            return decisions
        with self._unit_of_work(read_only=True) as repos:
            return self._decide(policy, plans, lambda: self._verifier.verify(presented, repos, now), repos, now,
                                client_address, judge)[0]

    def _count_failure(self, client_address: str) -> None:
        if self._failures is not None:
            self._failures.retry_after(client_address, 1, self._monotonic())

    def _fresh_enough(self, wanted: int) -> bool:
        """The cache is used only while it was confirmed against the store within its bound, and
        only for requests that do not ask for a newer revision than it holds; otherwise it is
        refreshed first (which fails with StoreUnavailable while the store is down)."""
        cache = self._cache
        assert cache is not None
        if cache.is_current() and wanted <= cache.revision:
            return True
        return wanted <= cache.refresh()

    def _decide(self, policy: Policy, plans: list[CheckPlan], verify: Callable[[], AuthenticatedCredential],
                facts: Repositories, now: datetime, client_address: str,
                judge: Callable[[CheckInput], Any] = decide) -> tuple[list[Any], AuthenticatedCredential | None]:
        """The decisions, and the credential when they are about a verified one that no rate limit
        refused (the only decisions a DecisionMemo may keep)."""
        try:
            credential: AuthenticatedCredential | CredentialRejected = verify()
        except CredentialRejected as rejected:
            credential = rejected
        if isinstance(credential, CredentialRejected):
            self._count_failure(client_address)
            return [judge(CheckInput(plan, credential)) for plan in plans], None
        partner_id = credential.principal.partner_id
        retry_after = self._limiter.retry_after(partner_id, len(plans), self._monotonic()) if self._limiter else 0
        if retry_after:
            return [judge(CheckInput(plan, credential, retry_after=retry_after)) for plan in plans], None
        if isinstance(judge, _Explainer):  # it reports the relations looked at, read from the same facts
            judge = judge.reading(facts)
        grants, listed = self._grants_of(policy, credential)
        return [judge(CheckInput(
            plan, credential, grants,
            frozenset(subject_type for subject_type in plan.relations
                      if facts.relations.is_active(partner_id, subject_type, plan.resource.subject_id(subject_type),
                                                   now)),
            policy.scope_names, listed_grants=listed,
            token_user_related=(plan.token_user is TokenUser.RELATED
                                and _token_user_related(plan, credential, facts, now)),
        )) for plan in plans], credential

    def _remember(self, memo_key: bytes, generation: int, policy: Policy, plan: CheckPlan,
                  credential: AuthenticatedCredential, decision: Decision) -> None:
        """Keeps the decision until the first of its facts may lapse: the credential's expiry and
        that of each relation the plan looked at, the token user's included (an inactive one only
        makes it end sooner)."""
        assert self._memo is not None and self._cache is not None
        partner_id = credential.principal.partner_id
        valid_until = credential.expires_at
        reader = self._cache.reader
        for subject_type, subject_id in relations_looked_at(plan, credential):
            expiry = reader.relation_expiry(partner_id, subject_type, subject_id)
            if expiry is not None and (valid_until is None or expiry < valid_until):
                valid_until = expiry
        self._memo.remember(memo_key, decision, partner_id, policy, generation, valid_until)

    def _grants_of(self, policy: Policy,
                   credential: AuthenticatedCredential) -> tuple[GrantSet, tuple[Permission, ...]]:
        key = (id(policy), id(credential))
        found = self._grants.get(key)
        if found is not None and found[0] is policy and found[1] is credential:
            return found[2], found[3]
        grants = effective_grants(policy, credential)
        listed = grants.listed(policy.scope_names)
        if len(self._grants) >= MAX_GRANTS_MEMO:
            self._grants.clear()
        self._grants[key] = (policy, credential, grants, listed)
        return grants, listed


def _token_user_related(plan: CheckPlan, credential: AuthenticatedCredential, facts: Repositories,
                        now: datetime) -> bool:
    """Whether the user the token acts for has an active relation with the token's partner: the fact
    a `token_user: related` operation needs, read through the same facts as the resource's relations."""
    user = acting_user(credential, plan.user_claim)
    return user is not None and facts.relations.is_active(credential.principal.partner_id, SubjectType.USER, user, now)


class _Explainer:
    """The judge of an explained check: decide() with the steps that led to the decision. Once the
    credential is proven it is bound to the facts the decision reads (reading()), so it reports
    the records of the relations the decision looked at, as the decision saw them."""

    def __init__(self, context: ExplainContext, facts: Repositories | None = None) -> None:
        self._context = context
        self._facts = facts

    def reading(self, facts: Repositories) -> _Explainer:
        return _Explainer(self._context, facts)

    def __call__(self, check: CheckInput) -> Explained:
        credential = check.credential
        if self._facts is None or not isinstance(credential, AuthenticatedCredential):
            return explain(check, self._context)
        partner_id = credential.principal.partner_id
        relations: dict[tuple[SubjectType, str], RelationRecord | None] = {
            (subject_type, subject_id): self._facts.relations.find_open(partner_id, subject_type, subject_id)
            for subject_type, subject_id in relations_looked_at(check.plan, credential)}
        return explain(check, replace(self._context, relations=relations))
