"""Explained checks in the pure core, held side by side with decide(); and principals that never mix
in the response templates of either adapter."""

from datetime import UTC, datetime, timedelta

import pytest
from tollgate.v1 import authorization_pb2

from service.domain.decide import CheckInput, Resource, decide, effective_grants, plan_check
from service.domain.decision import Decision, Reason, deny
from service.domain.errors import CredentialRejected
from service.domain.explain import ExplainContext, StepOutcome, explain
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
from service.transport.responses import CheckResponses, ExtAuthzResponses

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = parse_policy({
    "scopes": {"user": None, "organization": None, "order": None, "court-booking": None},
    "token_user_claim": "sub",
    "operations": {
        "health": {"public": True},
        "getUser": {"permissions": ["user:read"], "relation": "user"},
        "getOrganization": {"permissions": ["organization:read"], "relation": "organization"},
        "listCustomerOrders": {"permissions": ["order:read"], "customer": True},
        "getMyProfile": {"permissions": ["user:read"], "relation": "user", "token_user": "self"},
        "bookForUser": {"permissions": ["court-booking:write"], "token_user": "related"},
    },
})
ORDER = ["operation", "failed_credential_limit", "credential", "rate_limit", "permissions", "user_relation",
         "token_user", "organization_relation", "customer"]
STEP_OF_REASON = {
    Reason.UNKNOWN_OPERATION: {"operation"},
    Reason.MISSING_TOKEN: {"credential"}, Reason.INVALID_TOKEN: {"credential"}, Reason.TOKEN_EXPIRED: {"credential"},
    Reason.TOKEN_REVOKED: {"credential"},
    Reason.RATE_LIMIT_EXCEEDED: {"failed_credential_limit", "rate_limit"},
    Reason.INSUFFICIENT_SCOPE: {"permissions"},
    Reason.USER_ACCESS_DENIED: {"user_relation", "token_user"},
    Reason.ORGANIZATION_ACCESS_DENIED: {"organization_relation"},
    Reason.CUSTOMER_ACCESS_DENIED: {"customer"},
}
TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-payload.signature"  # what a verifier saw: never in an explanation


def credential(partner_id="p1", grants=("admin",), customers=(), kind=CredentialKind.API_KEY, **claims):
    partner = PartnerRecord(partner_id, "P", PartnerStatus.ACTIVE, ("admin",), (), NOW)
    return AuthenticatedCredential(Principal(partner_id, f"key_{partner_id}", kind), partner, tuple(grants), (),
                                   None, frozenset(customers), token_claims=tuple(claims.items()))


def check(operation, cred, resource=Resource(), active=(), **extra):
    plan = plan_check(POLICY, operation, [], resource)
    grants = effective_grants(POLICY, cred) if isinstance(cred, AuthenticatedCredential) else None
    if grants is None:
        return CheckInput(plan, cred, **extra)
    return CheckInput(plan, cred, grants, frozenset(active), POLICY.scope_names, **extra)


U1, ORG = Resource(user_id="u1"), Resource(organization_id="o1")
USER_JWT = credential(kind=CredentialKind.JWT, client_id="p1", sub="u1")
CASES = {
    "unknown operation": check("nope", credential()),
    "public": check("health", None),
    "failed-credential limit": check("getUser", None, U1, failures_retry_after=4),
    "missing": check("getUser", None, U1),
    "invalid": check("getUser", CredentialRejected("bad signature", reason="invalid_token"), U1),
    "revoked": check("getUser", CredentialRejected("revoked", reason="token_revoked"), U1),
    "partner rate limit": check("getUser", credential(), U1, retry_after=2),
    "insufficient scope": check("getUser", credential(grants=("order:read",)), U1),
    "no user relation": check("getUser", credential(), U1),
    "user relation": check("getUser", credential(), U1, {SubjectType.USER}),
    "no org relation": check("getOrganization", credential(), ORG),
    "org relation": check("getOrganization", credential(), ORG, {SubjectType.ORGANIZATION}),
    "foreign customer": check("listCustomerOrders", credential(customers=("C1", "C2")), Resource(customer_id="C9")),
    "own customer": check("listCustomerOrders", credential(customers=("C1",)), Resource(customer_id="C1")),
    "token user self": check("getMyProfile", USER_JWT, U1, {SubjectType.USER}),
    "token user other": check("getMyProfile", USER_JWT, Resource(user_id="u2"), {SubjectType.USER}),
    "api key acts for no user": check("getMyProfile", credential(), U1, {SubjectType.USER}),
    "token user unrelated": check("bookForUser", USER_JWT),
    "token user related": check("bookForUser", USER_JWT, token_user_related=True),
}


@pytest.mark.parametrize("name", CASES)
def test_an_explanation_agrees_with_the_decision(name):
    """The same decision; every step in decide()'s order; on a deny exactly one failed step, the
    one that gives its reason, and only skipped steps after it; on an allow none failed."""
    given = CASES[name]
    decision, steps = explain(given, ExplainContext(failure_limit=True, rate_limit=True))
    assert decision == decide(given)
    assert [step.name for step in steps] == ORDER
    failed = [i for i, step in enumerate(steps) if step.outcome is StepOutcome.FAILED]
    if decision.allowed:
        assert failed == []
    else:
        assert len(failed) == 1 and steps[failed[0]].name in STEP_OF_REASON[decision.reason]
        assert all(step.outcome is StepOutcome.SKIPPED for step in steps[failed[0] + 1:])
    for step in steps:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in step.facts)
        assert TOKEN not in repr(step.facts)


@pytest.mark.parametrize("name", ["token user other", "api key acts for no user", "token user unrelated",
                                  "partner rate limit", "insufficient scope", "foreign customer"])
def test_denials_after_the_credential_was_proven_name_it(name):
    given = CASES[name]
    decision = decide(given)
    assert not decision.allowed and decision.principal == given.credential.principal


def facts(steps, name):
    return dict(next(step for step in steps if step.name == name).facts)


def outcome(steps, name):
    return next(step for step in steps if step.name == name).outcome


def test_the_facts_say_what_was_compared():
    _, steps = explain(CASES["insufficient scope"])
    assert facts(steps, "operation") == {"operation": "getUser", "known": "yes", "public": "no", "needs": "user:read"}
    assert facts(steps, "credential") == {"presented": "yes", "partner_id": "p1", "credential_id": "key_p1",
                                          "credential_kind": "api_key"}
    assert facts(steps, "permissions") == {"needed": "user:read", "held": "order:read", "missing": "user:read"}
    assert outcome(steps, "failed_credential_limit") is StepOutcome.SKIPPED  # the limits are off by default
    _, steps = explain(CASES["foreign customer"])
    assert facts(steps, "customer") == {"customer_id": "C9", "credential_customer_ids": "C1 C2"}
    _, steps = explain(CASES["invalid"])
    assert facts(steps, "credential") == {"presented": "yes", "reason": "invalid_token"}
    _, steps = explain(CASES["missing"])
    assert facts(steps, "credential") == {"presented": "none"}
    assert facts(steps, "permissions") == {"why": "the credential step decided"}
    _, steps = explain(CASES["public"])
    assert [s.outcome for s in steps[1:]] == [StepOutcome.SKIPPED] * (len(ORDER) - 1)
    _, steps = explain(CASES["token user other"])
    assert facts(steps, "token_user") == {"demand": "self", "claim": "sub", "token_user": "u1", "user_id": "u2"}


def test_relations_looked_at_are_named_with_their_state():
    expires = NOW + timedelta(days=3)
    pending = RelationRecord("rel_1", "p1", SubjectType.USER, "u1", RelationStatus.PENDING, NOW, NOW, expires)
    context = ExplainContext(relations={(SubjectType.USER, "u1"): pending})
    _, steps = explain(CASES["no user relation"], context)
    assert outcome(steps, "user_relation") is StepOutcome.FAILED
    assert facts(steps, "user_relation") == {"subject_type": "user", "subject_id": "u1", "relation_id": "rel_1",
                                             "relation_status": "pending", "expires_at": "2026-01-04T00:00:00Z"}
    _, steps = explain(CASES["no org relation"], ExplainContext(relations={(SubjectType.ORGANIZATION, "o1"): None}))
    assert facts(steps, "organization_relation") == {"subject_type": "organization", "subject_id": "o1",
                                                     "relation_status": "none"}
    _, steps = explain(CASES["token user unrelated"], ExplainContext(relations={(SubjectType.USER, "u1"): None}))
    assert facts(steps, "token_user") == {"demand": "related", "claim": "sub", "token_user": "u1",
                                          "relation_status": "none"}


# --- principals in the response templates -------------------------------------------------------

def partner_denial(partner_id: str) -> Decision:
    return deny(Reason.USER_ACCESS_DENIED, "the partner has no active relation with this user", field="userId",
                principal=Principal(partner_id, f"key_{partner_id}", CredentialKind.API_KEY))


def test_native_templates_never_answer_one_partner_with_anothers_principal():
    responses = CheckResponses("r")
    for _ in range(3):  # the second and third time from the templates
        for partner_id in ("acme", "globex"):
            decision = partner_denial(partner_id)
            built = responses.message(decision, "d" * 32)
            assert (built.principal.partner_id, built.principal.credential_id) == (partner_id, f"key_{partner_id}")
            assert not built.grants and built.reason == "user_access_denied"
            for _repeat in range(2):
                encoded = responses.serialized(decision, "e" * 32)
                assert authorization_pb2.CheckResponse.FromString(encoded).principal.partner_id == partner_id


def test_ext_authz_templates_never_answer_one_partner_with_anothers_principal():
    responses = ExtAuthzResponses("r")
    for _ in range(3):
        for partner_id in ("acme", "globex"):
            response = responses.response(partner_denial(partner_id), "d" * 32, operation="getUser",
                                          strip_credentials=True)
            metadata = response.dynamic_metadata.fields
            assert metadata["partner_id"].string_value == partner_id
            assert metadata["credential_id"].string_value == f"key_{partner_id}"
            assert metadata["credential_kind"].string_value == "api_key"
            assert response.denied_response.status.code == 403


def test_an_explanation_is_added_to_a_copy_never_to_the_template():
    decision, steps = explain(CASES["no user relation"])
    responses = CheckResponses("r")
    explained = responses.message(decision, "d" * 32, steps)
    assert [step.name for step in explained.explanation] == ORDER
    assert explained.explanation[5].outcome == authorization_pb2.STEP_OUTCOME_FAILED
    assert dict(explained.explanation[2].facts)["partner_id"] == "p1"
    assert not responses.message(decision, "d" * 32).explanation
    encoded = responses.serialized(decision, "d" * 32)
    assert not authorization_pb2.CheckResponse.FromString(encoded).explanation
