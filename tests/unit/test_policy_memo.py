"""PolicyMemo: plans and effective grants kept per policy, keyed by value, so a kept answer is only
ever given for equal inputs."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.check.policy_memo import PolicyMemo
from service.domain.decide import Resource, effective_grants, plan_check
from service.domain.errors import InvalidRequest
from service.domain.model import (
    AuthenticatedCredential,
    CredentialKind,
    PartnerRecord,
    PartnerStatus,
    Principal,
)
from service.policy_file import load_policy

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACME = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read", "court-booking:write"), (), NOW)


@pytest.fixture(scope="module")
def memo() -> PolicyMemo:
    return PolicyMemo(load_policy(EXAMPLE_POLICY))


def test_the_plan_key_names_every_field_of_the_resource():
    # The key spells the resource out field by field (cheaper than the dataclass's own hash): a
    # field added to Resource must be added to the key too, or two requests differing only in it
    # would share a plan.
    assert [field.name for field in fields(Resource)] == ["user_id", "organization_id", "customer_id"]


def test_an_equal_request_shape_is_given_the_kept_plan(memo):
    first = memo.plan("getUser", [], Resource(user_id="u-1"))
    assert memo.plan("getUser", [], Resource(user_id="u-1")) is first
    assert first == plan_check(memo.policy, "getUser", [], Resource(user_id="u-1"))


@pytest.mark.parametrize("other", [
    ("getUser", [], Resource(user_id="u-2")),
    ("getUser", [], Resource(user_id="u-1", customer_id="c-1")),
    ("getUser", [], Resource(user_id="u-1", organization_id="o-1")),
    ("getUser", ["user:read"], Resource(user_id="u-1")),
    ("getOrganization", [], Resource(user_id="u-1", organization_id="o-1")),
])
def test_a_request_differing_in_any_part_gets_its_own_plan(memo, other):
    operation, permissions, resource = other
    memo.plan("getUser", [], Resource(user_id="u-1"))
    assert memo.plan(operation, permissions, resource) == plan_check(memo.policy, operation, permissions, resource)
    assert memo.plan(operation, permissions, resource).resource == resource


def test_an_invalid_request_raises_every_time(memo):
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            memo.plan("getUser", [], Resource())


def _credential(credential_id: str, *, scopes: tuple[str, ...] | None = None,
                own: tuple[str, ...] = ()) -> AuthenticatedCredential:
    kind = CredentialKind.API_KEY if scopes is None else CredentialKind.JWT
    return AuthenticatedCredential(Principal("acme", credential_id, kind), ACME, token_scopes=scopes, own_grants=own)


def test_credentials_with_the_same_grant_inputs_share_one_grant_set(memo):
    first = memo.grants(_credential("key_1"))
    assert memo.grants(_credential("key_2")) is first
    assert first == effective_grants(memo.policy, _credential("key_1"))


@pytest.mark.parametrize("other", [
    _credential("key_3", own=("user:read",)),
    _credential("tok_1", scopes=("court-booking:read",)),
])
def test_different_grant_inputs_get_their_own_grants(memo, other):
    memo.grants(_credential("key_1"))
    assert memo.grants(other) == effective_grants(memo.policy, other)
    assert memo.grants(other) != memo.grants(_credential("key_1"))
