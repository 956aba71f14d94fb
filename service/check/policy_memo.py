"""What Check derives from the policy alone, kept while that policy is in force.

plan_check and effective_grants are pure in the policy and their other arguments, and a gateway
asks the same few request shapes with the same few credentials again and again: planning and
computing grants each time would cost more than deciding. Keys are values, never identities, so a
kept answer can only ever be given for equal inputs.
"""

from __future__ import annotations

from ..domain.bounded import BoundedMap
from ..domain.decide import CheckPlan, Resource, effective_grants, plan_check
from ..domain.model import AuthenticatedCredential
from ..domain.policy import Policy
from ..domain.scopes import GrantSet

# Request shapes whose plans are kept; credential shapes whose grants are kept.
MAX_PLANS = 4096
MAX_GRANTS = 4096


class PolicyMemo:
    """One per policy object: a reload brings a new policy and so a new, empty memo."""

    __slots__ = ("_grants", "_plans", "policy")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._plans: BoundedMap[tuple, CheckPlan] = BoundedMap(MAX_PLANS)
        self._grants: BoundedMap[tuple, GrantSet] = BoundedMap(MAX_GRANTS)

    def plan(self, operation: str, permissions: list[str], resource: Resource) -> CheckPlan:
        """plan_check's plan. Only valid plans are kept: an invalid request raises every time."""
        # The resource by its fields, strings hashed and compared in C: the dataclass's own
        # __hash__ and __eq__ would each cost a Python frame on every check.
        # tests/unit/test_policy_memo.py fails when Resource gains a field this key lacks.
        key = (operation, tuple(permissions), resource.user_id, resource.organization_id, resource.customer_id)
        found = self._plans.get(key)
        if found is None:
            found = plan_check(self.policy, operation, permissions, resource)
            self._plans.put(key, found)
        return found

    def grants(self, credential: AuthenticatedCredential) -> GrantSet:
        """effective_grants of the credential: the same GrantSet object for every credential with
        the same grant inputs, so its sorted listing is made once too (GrantSet.listed)."""
        partner = credential.partner
        key = (credential.principal.kind, partner.grants, partner.roles, credential.token_scopes,
               credential.own_grants, credential.own_roles)
        found = self._grants.get(key)
        if found is None:
            found = effective_grants(self.policy, credential)
            self._grants.put(key, found)
        return found
