"""Check: one request in, one Decision out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..domain.credentials import parse_presented
from ..domain.decide import CheckInput, Resource, decide, effective_grants, plan_check
from ..domain.decision import Decision
from ..domain.errors import CredentialRejected
from ..domain.policy import Policy
from ..domain.ports import Clock, CredentialVerifier, UnitOfWork


@dataclass(frozen=True)
class CheckQuery:
    authorization: str = ""
    api_key: str = ""
    operation: str = ""
    permissions: list[str] = field(default_factory=list)
    resource: Resource = Resource()


class CheckService:
    def __init__(
        self,
        policy: Callable[[], Policy],
        unit_of_work: UnitOfWork,
        verifier: CredentialVerifier,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._verifier = verifier
        self._clock = clock

    def check(self, query: CheckQuery) -> Decision:
        """Raises InvalidRequest for a malformed query and StoreUnavailable when the store is down;
        every other outcome, allow or deny, is the returned Decision."""
        policy = self._policy()
        plan = plan_check(policy, query.operation, query.permissions, query.resource)
        if not plan.known or plan.public:
            return decide(CheckInput(plan, None))
        try:
            presented = parse_presented(query.authorization, query.api_key)
        except CredentialRejected as rejected:
            return decide(CheckInput(plan, rejected))
        if presented is None:
            return decide(CheckInput(plan, None))
        now = self._clock.now()
        with self._unit_of_work(read_only=True) as repos:
            try:
                credential = self._verifier.verify(presented, repos, now)
            except CredentialRejected as rejected:
                return decide(CheckInput(plan, rejected))
            partner_id = credential.principal.partner_id
            active = frozenset(
                subject_type
                for subject_type in plan.relations
                if repos.relations.is_active(partner_id, subject_type, plan.resource.subject_id(subject_type), now)
            )
        grants = effective_grants(policy, credential)
        return decide(CheckInput(plan, credential, grants, active, policy.scope_names))
