"""Tokens that act for a user: the policy's token_user_claim and operations' token_user, decided by
the pure core (no server, no store)."""

from datetime import UTC, datetime

import pytest

from service.domain.decide import CheckInput, Resource, acting_user, decide, effective_grants, plan_check
from service.domain.decision import Reason
from service.domain.errors import InvalidRequest, PolicyError
from service.domain.model import AuthenticatedCredential, CredentialKind, PartnerRecord, PartnerStatus, Principal
from service.domain.policy import TokenUser, parse_policy

NOW = datetime(2026, 1, 1, tzinfo=UTC)

DOCUMENT = {
    "scopes": {"user": None, "court-booking": None},
    "token_user_claim": "sub",
    "operations": {
        "getUser": {"permissions": ["user:read"], "relation": "user"},
        "getMyProfile": {"permissions": ["user:read"], "relation": "user", "token_user": "self"},
        "bookForUser": {"permissions": ["court-booking:write"], "token_user": "related"},
    },
}
POLICY = parse_policy(DOCUMENT)
PARTNER = PartnerRecord("p1", "P", PartnerStatus.ACTIVE, ("admin",), (), NOW)


def jwt(**claims: str) -> AuthenticatedCredential:
    """A verified JWT of partner p1 with these string claims (as the verifier records them)."""
    return AuthenticatedCredential(Principal("p1", "iss_x:j1", CredentialKind.JWT), PARTNER,
                                   token_claims=tuple(claims.items()))


def own_token(**claims: str) -> AuthenticatedCredential:
    return AuthenticatedCredential(Principal("p1", "cli_1:j1", CredentialKind.OAUTH_CLIENT), PARTNER,
                                   token_claims=tuple(claims.items()))


API_KEY = AuthenticatedCredential(Principal("p1", "key_1", CredentialKind.API_KEY), PARTNER)
# An API key can never act for a user, even if something put claims on it.
API_KEY_WITH_CLAIMS = AuthenticatedCredential(Principal("p1", "key_1", CredentialKind.API_KEY), PARTNER,
                                              token_claims=(("sub", "u1"), ("client_id", "p1")))


def run(operation: str, credential: AuthenticatedCredential, *, user_id: str = "", resource_related: bool = True,
        token_user_related: bool = False, policy=POLICY):
    plan = plan_check(policy, operation, [], Resource(user_id=user_id))
    active = frozenset(plan.relations) if resource_related else frozenset()
    return decide(CheckInput(plan, credential, effective_grants(policy, credential), active, policy.scope_names,
                             token_user_related=token_user_related))


@pytest.mark.parametrize("credential, user", [
    (jwt(client_id="p1", sub="u1"), "u1"),
    (own_token(client_id="cli_1", sub="u1"), "u1"),
    (jwt(client_id="p1", sub="p1"), None),  # client credentials: sub is the client itself
    (jwt(sub="p1"), None),  # no client_id: sub names the client (the partner), as the verifier reads it
    (own_token(client_id="cli_1", sub="cli_1"), None),  # Tollgate's client-credentials token
    (jwt(client_id="p1"), None),  # no user claim at all
    (jwt(client_id="p1", sub=""), None),
    (jwt(client_id="p1", sub="u\x00"), None),  # not a printable id
    (jwt(client_id="p1", sub="u" * 257), None),  # longer than any resource id
    (API_KEY, None),
    (API_KEY_WITH_CLAIMS, None),
])
def test_acting_user(credential, user):
    assert acting_user(credential, "sub") == user


def test_acting_user_reads_the_claim_the_policy_names_and_none_without_one():
    credential = jwt(client_id="p1", sub="p1", uid="u7")
    assert acting_user(credential, "uid") == "u7"
    assert acting_user(credential, None) is None and acting_user(credential, "") is None
    assert acting_user(credential, "client_id") is None  # the client is never its own user


SELF_OK = jwt(client_id="p1", sub="u1")


@pytest.mark.parametrize("operation, credential, kwargs, allowed", [
    ("getMyProfile", SELF_OK, {"user_id": "u1"}, True),
    ("getMyProfile", SELF_OK, {"user_id": "u2"}, False),  # the token acts for another user
    ("getMyProfile", jwt(client_id="p1", sub="p1"), {"user_id": "p1"}, False),  # client credentials
    ("getMyProfile", API_KEY, {"user_id": "u1"}, False),
    ("getMyProfile", own_token(client_id="cli_1", sub="u1"), {"user_id": "u1"}, True),
    ("bookForUser", SELF_OK, {"token_user_related": True}, True),
    ("bookForUser", SELF_OK, {"token_user_related": False}, False),
    ("bookForUser", jwt(client_id="p1", sub="p1"), {"token_user_related": True}, False),
    ("bookForUser", API_KEY, {"token_user_related": True}, False),
    ("getUser", API_KEY, {"user_id": "u1"}, True),  # no token_user: unchanged
])
def test_token_user_decisions(operation, credential, kwargs, allowed):
    decision = run(operation, credential, **kwargs)
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.reason, decision.http_status, decision.field) == (Reason.USER_ACCESS_DENIED, 403, "userId")


@pytest.mark.parametrize("operation, credential, kwargs, words", [
    ("getMyProfile", API_KEY, {"user_id": "u1"}, "acts for no user"),
    ("bookForUser", jwt(client_id="p1", sub="p1"), {}, "acts for no user"),
    ("getMyProfile", jwt(client_id="p1", sub="secret-user"), {"user_id": "u1"}, "another user"),
    ("bookForUser", jwt(client_id="p1", sub="secret-user"), {}, "no active relation"),
])
def test_denials_say_why_without_quoting_the_token_user(operation, credential, kwargs, words):
    decision = run(operation, credential, **kwargs)
    assert words in decision.message and "secret-user" not in decision.message


def test_the_resource_relation_is_checked_before_the_token_user():
    decision = run("getMyProfile", SELF_OK, user_id="u1", resource_related=False)
    assert decision.message == "the partner has no active relation with this user"


def test_scope_is_checked_before_the_token_user():
    narrow = AuthenticatedCredential(Principal("p1", "iss_x:j1", CredentialKind.JWT), PARTNER, token_scopes=(),
                                     token_claims=(("client_id", "p1"), ("sub", "u1")))
    assert run("getMyProfile", narrow, user_id="u1").reason is Reason.INSUFFICIENT_SCOPE


def test_the_plan_captures_the_demand_and_the_claim():
    plan = plan_check(POLICY, "bookForUser", [], Resource())
    assert (plan.token_user, plan.user_claim) == (TokenUser.RELATED, "sub")
    plain = plan_check(POLICY, "getUser", [], Resource(user_id="u1"))
    assert (plain.token_user, plain.user_claim) == (None, None)
    assert plan_check(POLICY, "", ["user:read"], Resource()).token_user is None


def test_self_still_needs_the_user_resource_in_the_request():
    with pytest.raises(InvalidRequest) as raised:
        plan_check(POLICY, "getMyProfile", [], Resource())
    assert raised.value.field == "resource.user_id"


@pytest.mark.parametrize("document, field, words", [
    ({**DOCUMENT, "token_user_claim": None}, "operations.getMyProfile.token_user", "token_user_claim"),
    ({k: v for k, v in DOCUMENT.items() if k != "token_user_claim"}, "operations.getMyProfile.token_user",
     "token_user_claim"),
    ({**DOCUMENT, "token_user_claim": 3}, "token_user_claim", "name of a token claim"),
    ({**DOCUMENT, "token_user_claim": " "}, "token_user_claim", "name of a token claim"),
    ({**DOCUMENT, "operations": {"book": {"token_user": "self"}}}, "operations.book.token_user", "no user resource"),
    ({**DOCUMENT, "operations": {"org": {"relation": "organization", "token_user": "self"}}},
     "operations.org.token_user", "no user resource"),
    ({**DOCUMENT, "operations": {"x": {"relation": "user", "token_user": "owner"}}}, "operations.x.token_user",
     "self or related"),
    ({**DOCUMENT, "operations": {"x": {"public": True, "token_user": "related"}}}, "operations.x.public",
     "public"),
])
def test_policy_refuses_bad_token_user_settings(document, field, words):
    with pytest.raises(PolicyError) as raised:
        parse_policy(document)
    assert raised.value.field == field and words in raised.value.message


def test_without_token_user_claim_no_token_acts_for_a_user():
    policy = parse_policy({"scopes": {"user": None}, "operations": {"getUser": {"relation": "user"}}})
    assert policy.token_user_claim is None
    assert policy.operations["getUser"].token_user is None
    assert POLICY.operations["getMyProfile"].token_user is TokenUser.SELF


def test_the_commented_example_in_the_example_policy_loads():
    """examples/policy.yaml shows token_user_claim and token_user in comments: uncommented, they load."""
    from pathlib import Path

    import yaml

    example = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
    lines = example.read_text().splitlines()
    start = lines.index("# token_user_claim: sub")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    commented = yaml.safe_load("\n".join(block))
    document = yaml.safe_load(example.read_text())
    document["token_user_claim"] = commented["token_user_claim"]
    document["operations"].update(commented["operations"])
    policy = parse_policy(document)
    assert policy.token_user_claim == "sub"
    assert {name: op.token_user for name, op in policy.operations.items() if op.token_user} == {
        "getMyProfile": TokenUser.SELF, "bookForSignedInUser": TokenUser.RELATED}
