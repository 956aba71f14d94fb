"""The token service's pure rules: scopes a token may carry, refresh narrowing, the error table,
and the roles a policy gives each kind of credential."""

from datetime import UTC, datetime

import pytest

from service.domain.decide import effective_grants
from service.domain.errors import PolicyError
from service.domain.model import AuthenticatedCredential, CredentialKind, PartnerRecord, PartnerStatus, Principal
from service.domain.oauth import (
    OAuthError,
    OAuthErrorCode,
    ceiling_scopes,
    granted_scopes,
    narrowed_scopes,
    requested_scopes,
    scopes_supported,
)
from service.domain.policy import parse_policy
from service.domain.scopes import AccessLevel, GrantSet

NOW = datetime(2026, 1, 1, tzinfo=UTC)

DOCUMENT = {
    "scopes": {"user": None, "court-booking": {"aliases": ["bookings"]}, "order": None},
    "roles": {"api-user": {"grants": ["user:read"]}, "agent": {"grants": ["user:read", "court-booking:write"]}},
    "operations": {"getUser": {"permissions": ["user:read"]}},
}
POLICY = parse_policy(DOCUMENT)
AGENT = GrantSet({"user": AccessLevel.READ, "court-booking": AccessLevel.WRITE})


@pytest.mark.parametrize("text, expected", [
    (None, None),
    ("user:read", ("user:read",)),
    ("user:read read:bookings", ("user:read", "read:bookings")),
    ("user:read user:read", ("user:read",)),
])
def test_the_scope_parameter_is_split_into_distinct_tokens(text, expected):
    assert requested_scopes(text) == expected


@pytest.mark.parametrize("text", ["", " ", "user:read  order:read", " user:read", "user:read\t", 'a"b', "a\\b",
                                  "é", " ".join(f"s{i}" for i in range(65))])
def test_a_malformed_scope_parameter_is_invalid_scope(text):
    with pytest.raises(OAuthError) as refused:
        requested_scopes(text)
    assert refused.value.code is OAuthErrorCode.INVALID_SCOPE


@pytest.mark.parametrize("requested", [("user:read",), ("read:bookings",), ("court-booking:read", "user:read"),
                                       ("write:court-booking",)])
def test_scopes_within_the_ceiling_are_granted_as_requested(requested):
    assert granted_scopes(POLICY, requested, AGENT) == requested


@pytest.mark.parametrize("requested", [("user:write",), ("order:read",), ("admin",), ("nonsense:read",),
                                       ("openid",), ("user:read", "order:read")])
def test_scopes_beyond_the_ceiling_or_unknown_are_invalid_scope(requested):
    with pytest.raises(OAuthError) as refused:
        granted_scopes(POLICY, requested, AGENT)
    assert refused.value.code is OAuthErrorCode.INVALID_SCOPE
    assert refused.value.code.http_status == 400


def test_without_a_scope_the_token_gets_the_ceiling_spelled_canonically():
    assert ceiling_scopes(POLICY, AGENT) == ("court-booking:write", "user:read")
    assert ceiling_scopes(POLICY, GrantSet({}, AccessLevel.WRITE)) == ("admin",)
    assert ceiling_scopes(POLICY, GrantSet()) == ()


def test_a_refresh_may_narrow_but_never_widen():
    original = ("user:read", "court-booking:write")
    assert narrowed_scopes(POLICY, None, original) == original
    assert narrowed_scopes(POLICY, ("court-booking:read",), original) == ("court-booking:read",)
    for wider in (("user:write",), ("order:read",), ("admin",)):
        with pytest.raises(OAuthError) as refused:
            narrowed_scopes(POLICY, wider, original)
        assert refused.value.code is OAuthErrorCode.INVALID_SCOPE


@pytest.mark.parametrize("code, status", [
    (OAuthErrorCode.INVALID_REQUEST, 400), (OAuthErrorCode.INVALID_CLIENT, 401), (OAuthErrorCode.INVALID_GRANT, 400),
    (OAuthErrorCode.UNAUTHORIZED_CLIENT, 400), (OAuthErrorCode.UNSUPPORTED_GRANT_TYPE, 400),
    (OAuthErrorCode.INVALID_SCOPE, 400), (OAuthErrorCode.UNSUPPORTED_TOKEN_TYPE, 400),
    (OAuthErrorCode.INSUFFICIENT_SCOPE, 403), (OAuthErrorCode.TEMPORARILY_UNAVAILABLE, 429),
])
def test_every_oauth_error_has_its_status(code, status):
    assert code.http_status == status


def test_the_metadata_advertises_each_scope_at_read_and_write_and_admin():
    assert scopes_supported(POLICY) == ["court-booking:read", "court-booking:write", "order:read", "order:write",
                                        "user:read", "user:write", "admin"]


def _credential(kind: CredentialKind, own_grants=(), token_scopes=None, partner_roles=("agent",)):
    partner = PartnerRecord("p1", "P", PartnerStatus.ACTIVE, (), tuple(partner_roles), NOW)
    return AuthenticatedCredential(Principal("p1", "c1", kind), partner, own_grants=tuple(own_grants),
                                   token_scopes=token_scopes)


def test_a_kind_with_roles_acts_with_them_and_other_kinds_inherit_the_partner():
    policy = parse_policy({**DOCUMENT, "credential_kinds": {"api_key": {"roles": ["api-user"]}}})
    assert effective_grants(policy, _credential(CredentialKind.API_KEY)).levels == {"user": AccessLevel.READ}
    assert effective_grants(policy, _credential(CredentialKind.OAUTH_CLIENT)) == AGENT
    # A credential's own grants win over its kind's roles; the partner stays the ceiling.
    assert effective_grants(policy, _credential(CredentialKind.API_KEY, ("court-booking:write",))).levels == \
        {"court-booking": AccessLevel.WRITE}
    assert effective_grants(policy, _credential(CredentialKind.API_KEY, partner_roles=())) == GrantSet()


@pytest.mark.parametrize("kinds, field", [
    ({"password": {"roles": ["api-user"]}}, "credential_kinds.password"),
    ({"api_key": {"roles": ["nobody"]}}, "credential_kinds.api_key.roles[0]"),
    ({"api_key": ["api-user"]}, "credential_kinds.api_key"),
    ({"api_key": {"roles": ["api-user"], "grants": []}}, "credential_kinds.api_key"),
])
def test_a_broken_credential_kinds_section_names_its_key(kinds, field):
    with pytest.raises(PolicyError) as refused:
        parse_policy({**DOCUMENT, "credential_kinds": kinds})
    assert refused.value.field == field
