"""The decision core as a pure function: tables of inputs -> decision, reason, status."""

from datetime import UTC, datetime

import pytest

from service.domain.decide import CheckInput, Resource, api_field_name, decide, effective_grants, plan_check
from service.domain.decision import Reason
from service.domain.errors import CredentialRejected, InvalidRequest
from service.domain.model import (
    AuthenticatedCredential,
    CredentialKind,
    PartnerRecord,
    PartnerStatus,
    Principal,
    SubjectType,
)
from service.domain.policy import parse_policy

NOW = datetime(2026, 1, 1, tzinfo=UTC)

POLICY = parse_policy({
    "scopes": {"user": None, "organization": None, "court-booking": {"aliases": ["bookings"]}, "order": None},
    "roles": {"reader": {"grants": ["user:read", "organization:read"]}},
    "operations": {
        "health": {"public": True},
        "getUser": {"permissions": ["user:read"], "relation": "user"},
        "updateUser": {"permissions": ["user:write"], "relation": "user"},
        "getOrganization": {"permissions": ["organization:read"], "relation": "organization"},
        "createCourtBooking": {"permissions": ["court-booking:write"]},
        "listCustomerOrders": {"permissions": ["order:read"], "customer": True},
        "ping": {},
    },
})


def credential(grants=(), roles=(), partner_grants=("admin",), token_scopes=None, customers=()):
    partner = PartnerRecord("p1", "P", PartnerStatus.ACTIVE, tuple(partner_grants), (), NOW)
    return AuthenticatedCredential(
        Principal("p1", "key_1", CredentialKind.API_KEY), partner, tuple(grants), tuple(roles),
        token_scopes, frozenset(customers))


def run(operation, *, cred=None, permissions=(), resource=Resource(), active=frozenset()):
    plan = plan_check(POLICY, operation, list(permissions), resource)
    grants = effective_grants(POLICY, cred) if isinstance(cred, AuthenticatedCredential) else None
    check = CheckInput(plan, cred, grants or effective_grants(POLICY, credential(partner_grants=())),
                       frozenset(active), POLICY.scope_names)
    return decide(check)


U1 = Resource(user_id="u1")
ORG = Resource(organization_id="o1")


@pytest.mark.parametrize("operation, kwargs, reason, status", [
    ("nope", {}, Reason.UNKNOWN_OPERATION, 403),
    ("", {}, Reason.UNKNOWN_OPERATION, 403),
    ("nope", {"permissions": ["user:read"], "cred": credential(["user:read"])}, Reason.UNKNOWN_OPERATION, 403),
    ("health", {}, None, 200),
    ("getUser", {"resource": U1}, Reason.MISSING_TOKEN, 401),
    ("getUser", {"resource": U1, "cred": CredentialRejected("x", reason="invalid_token")}, Reason.INVALID_TOKEN, 401),
    ("getUser", {"resource": U1, "cred": CredentialRejected("x", reason="token_expired")}, Reason.TOKEN_EXPIRED, 401),
    ("getUser", {"resource": U1, "cred": CredentialRejected("x", reason="token_revoked")}, Reason.TOKEN_REVOKED, 401),
    ("getUser", {"resource": U1, "cred": credential(["organization:read"])}, Reason.INSUFFICIENT_SCOPE, 403),
    ("getUser", {"resource": U1, "cred": credential(["user:read"])}, Reason.USER_ACCESS_DENIED, 403),
    ("getUser", {"resource": U1, "cred": credential(["user:read"]), "active": {SubjectType.USER}}, None, 200),
    ("updateUser", {"resource": U1, "cred": credential(["user:read"]), "active": {SubjectType.USER}},
     Reason.INSUFFICIENT_SCOPE, 403),
    ("updateUser", {"resource": U1, "cred": credential(["user:write"]), "active": {SubjectType.USER}}, None, 200),
    ("getOrganization", {"resource": ORG, "cred": credential(["organization:read"])},
     Reason.ORGANIZATION_ACCESS_DENIED, 403),
    ("listCustomerOrders", {"resource": Resource(customer_id="c9"), "cred": credential(["order:read"], customers=["c1"])},
     Reason.CUSTOMER_ACCESS_DENIED, 403),
    ("listCustomerOrders", {"resource": Resource(customer_id="c1"), "cred": credential(["order:read"], customers=["c1"])},
     None, 200),
    ("ping", {"cred": credential()}, None, 200),
    ("ping", {}, Reason.MISSING_TOKEN, 401),
])
def test_decision_table(operation, kwargs, reason, status):
    decision = run(operation, **kwargs)
    assert decision.reason == reason
    assert decision.http_status == status
    assert decision.allowed is (reason is None)


def test_customer_denial_names_the_field():
    decision = run("listCustomerOrders", resource=Resource(customer_id="c9"), cred=credential(["order:read"]))
    assert decision.field == "customerId"


def test_insufficient_scope_names_every_missing_permission():
    decision = run("getUser", resource=U1, cred=credential(["order:read"]), permissions=["write:bookings"])
    assert decision.missing_scope == "user:read court-booking:write"
    assert "user:read" in decision.message


@pytest.mark.parametrize("spelling", ["user:read", "read:user", "user:write", "write:user", "admin"])
def test_scope_spellings_satisfy_user_read(spelling):
    decision = run("getUser", resource=U1, cred=credential([spelling]), active={SubjectType.USER})
    assert decision.allowed


def test_alias_spelling_maps_to_the_declared_scope():
    decision = run("createCourtBooking", cred=credential(["write:bookings"]))
    assert decision.allowed
    assert [str(g) for g in decision.grants] == ["court-booking:write"]


def test_role_grants_count():
    assert run("getUser", resource=U1, cred=credential(roles=["reader"]), active={SubjectType.USER}).allowed


def test_credential_never_exceeds_partner():
    cred = credential(["user:write"], partner_grants=["user:read"])
    assert run("updateUser", resource=U1, cred=cred, active={SubjectType.USER}).reason is Reason.INSUFFICIENT_SCOPE
    assert run("getUser", resource=U1, cred=cred, active={SubjectType.USER}).allowed


def test_jwt_scope_claim_narrows_and_cannot_widen():
    narrowed = credential(partner_grants=["admin"], token_scopes=("read:user", "openid"))
    assert run("getUser", resource=U1, cred=narrowed, active={SubjectType.USER}).allowed
    assert run("updateUser", resource=U1, cred=narrowed, active={SubjectType.USER}).reason is Reason.INSUFFICIENT_SCOPE
    widened = credential(partner_grants=["user:read"], token_scopes=("admin",))
    assert run("updateUser", resource=U1, cred=widened, active={SubjectType.USER}).reason is Reason.INSUFFICIENT_SCOPE


def test_credential_without_own_grants_inherits_partner():
    assert run("createCourtBooking", cred=credential(partner_grants=["court-booking:write"])).allowed


def test_explicit_permissions_check_every_named_resource():
    decision = run("", permissions=["organization:read"], cred=credential(["organization:read"]), resource=ORG)
    assert decision.reason is Reason.ORGANIZATION_ACCESS_DENIED


@pytest.mark.parametrize("operation, permissions, resource, field", [
    ("getUser", [], Resource(), "resource.user_id"),
    ("getOrganization", [], Resource(), "resource.organization_id"),
    ("listCustomerOrders", [], Resource(), "resource.customer_id"),
    ("getUser", ["user:reed"], U1, "permissions[0]"),
    ("getUser", ["nosuch:read"], U1, "permissions[0]"),
    ("getUser", [], Resource(user_id="x" * 300), "resource.user_id"),
    ("getUser", [], Resource(user_id="a\nb"), "resource.user_id"),
])
def test_malformed_requests_are_invalid_argument(operation, permissions, resource, field):
    with pytest.raises(InvalidRequest) as raised:
        plan_check(POLICY, operation, permissions, resource)
    assert raised.value.field == field


def test_allow_lists_effective_grants_and_principal():
    decision = run("ping", cred=credential(partner_grants=["admin"]))
    assert decision.principal.partner_id == "p1"
    assert {str(g) for g in decision.grants} == {"user:write", "organization:write", "court-booking:write", "order:write"}


def other_partner_credential(grants=()):
    partner = PartnerRecord("p2", "P2", PartnerStatus.ACTIVE, ("admin",), (), NOW)
    return AuthenticatedCredential(Principal("p2", "key_2", CredentialKind.API_KEY), partner, tuple(grants))


@pytest.mark.parametrize("operation, resource, grants, reason", [
    ("getUser", U1, ["organization:read"], Reason.INSUFFICIENT_SCOPE),
    ("getUser", U1, ["user:read"], Reason.USER_ACCESS_DENIED),
    ("getOrganization", ORG, ["organization:read"], Reason.ORGANIZATION_ACCESS_DENIED),
    ("listCustomerOrders", Resource(customer_id="c9"), ["order:read"], Reason.CUSTOMER_ACCESS_DENIED),
])
def test_a_deny_after_the_credential_is_proven_names_its_principal(operation, resource, grants, reason):
    """Who was refused, as an allow says who was let through; two partners' denials are never equal
    (nothing keyed by a Decision can answer one with the other's)."""
    first = run(operation, resource=resource, cred=credential(grants))
    second = run(operation, resource=resource, cred=other_partner_credential(grants))
    assert (first.reason, second.reason) == (reason, reason)
    assert first.principal == Principal("p1", "key_1", CredentialKind.API_KEY)
    assert second.principal == Principal("p2", "key_2", CredentialKind.API_KEY)
    assert first != second and first.grants == second.grants == ()


def test_the_partners_rate_limit_names_the_principal():
    plan = plan_check(POLICY, "ping", [], Resource())
    decision = decide(CheckInput(plan, credential(), retry_after=3))
    assert (decision.reason, decision.retry_after) == (Reason.RATE_LIMIT_EXCEEDED, 3)
    assert decision.principal.partner_id == "p1"


@pytest.mark.parametrize("check", [
    CheckInput(plan_check(POLICY, "getUser", [], U1), None),
    CheckInput(plan_check(POLICY, "getUser", [], U1), CredentialRejected("bad", reason="invalid_token")),
    CheckInput(plan_check(POLICY, "getUser", [], U1), CredentialRejected("old", reason="token_expired")),
    CheckInput(plan_check(POLICY, "getUser", [], U1), CredentialRejected("gone", reason="token_revoked")),
    CheckInput(plan_check(POLICY, "getUser", [], U1), None, failures_retry_after=2),
    CheckInput(plan_check(POLICY, "nope", [], U1), credential()),  # decided before the credential counts
], ids=["missing", "invalid", "expired", "revoked", "failed-credential-limit", "unknown-operation"])
def test_a_deny_about_no_recognised_credential_names_none(check):
    decision = decide(check)
    assert not decision.allowed and decision.principal is None


@pytest.mark.parametrize("operation, resource, field, words", [
    ("getUser", Resource(), "resource.user_id", "needs the user id"),
    ("getOrganization", Resource(), "resource.organization_id", "needs the organization id"),
    ("listCustomerOrders", Resource(), "resource.customer_id", "needs the customer number"),
    ("getUser", Resource(user_id="a\nb"), "resource.user_id", "the user id is too long"),
])
def test_malformed_requests_name_the_proto_field_and_the_api_maps_it(operation, resource, field, words):
    """gRPC errors name the CheckRequest field; what a gateway's client sees names the partner
    API's field, as the denials of the same resource do. Messages name it in words, so they read
    the same on both surfaces."""
    with pytest.raises(InvalidRequest) as raised:
        plan_check(POLICY, operation, [], resource)
    assert raised.value.field == field and words in raised.value.message and "resource." not in raised.value.message
    api_name = api_field_name(field)
    assert api_name == {"resource.user_id": "userId", "resource.organization_id": "organizationId",
                        "resource.customer_id": "customerId"}[field]
    assert api_field_name("permissions[0]") == "permissions[0]"


def test_denials_name_the_fields_as_the_partner_api_does():
    assert run("getUser", resource=U1, cred=credential(["user:read"])).field == api_field_name("resource.user_id")
    assert run("getOrganization", resource=ORG, cred=credential(["organization:read"])).field == \
        api_field_name("resource.organization_id")
