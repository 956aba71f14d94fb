from pathlib import Path

import pytest

from service.domain import opaque
from service.domain.credentials import PresentedKind, QueryApiKey, parse_presented
from service.domain.errors import CredentialRejected, PolicyError
from service.domain.model import RelationStatus as S
from service.domain.relations import can_transition
from service.policy_file import load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def test_example_policy_loads_with_the_documented_operations():
    policy = load_policy(EXAMPLE)
    assert set(policy.operations) >= {"health", "getUser", "updateUser", "getOrganization",
                                       "createCourtBooking", "listCustomerOrders"}
    assert policy.operations["health"].public


@pytest.mark.parametrize("text, expected", [
    ("operations:\n  x: [\n", "line 3"),
    ("scopes:\n  user: {}\noperations:\n  getUser:\n    permissions: [usr:read]\n", "line 5"),
    ("scopes:\n  user: {}\noperations:\n  getUser:\n    relation: customer\n", "operations.getUser.relation"),
    ("scopes:\n  user: {}\noperations:\n  getUser:\n    permisions: [user:read]\n", "permisions"),
    ("scopes:\n  user: {}\nroles:\n  r:\n    grants: [user:rwx]\noperations:\n  a: {}\n", "roles.r.grants[0]"),
    ("scopes:\n  user: {}\noperations:\n  h:\n    public: true\n    permissions: [user:read]\n", "public"),
    ("- just a list\n", "mapping"),
    ("version: 2\nscopes: {user: {}}\noperations: {a: {}}\n", "version"),
])
def test_broken_policy_is_refused_naming_line_or_key(tmp_path, text, expected):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert expected in str(raised.value)
    assert str(path) in str(raised.value)


def test_opaque_secrets_have_prefix_entropy_and_checksum():
    key = opaque.generate(opaque.API_KEY_PREFIX)
    assert key.startswith("tg_live_") and opaque.well_formed(key, opaque.API_KEY_PREFIX)
    mistyped = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    assert not opaque.well_formed(mistyped, opaque.API_KEY_PREFIX)
    assert not opaque.well_formed(key[:-1], opaque.API_KEY_PREFIX)
    assert len({opaque.generate("x_") for _ in range(200)}) == 200
    assert opaque.digest(key) != key and len(opaque.digest(key)) == 64


@pytest.mark.parametrize("authorization, api_key, kind", [
    ("Bearer tg_live_abc", "", PresentedKind.API_KEY),
    ("bearer eyJhbGciOi.x.y", "", PresentedKind.JWT),
    ("", "tg_live_abc", PresentedKind.API_KEY),
    ("", "anything", PresentedKind.API_KEY),
])
def test_presented_credential_kinds(authorization, api_key, kind):
    assert parse_presented(authorization, api_key).kind is kind


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer a b", "Bearer\tx", "Bearer:x", "B@sic x", "é x", "x" * 20000])
def test_malformed_authorization_is_invalid_token(authorization):
    with pytest.raises(CredentialRejected) as raised:
        parse_presented(authorization, "")
    assert raised.value.reason == "invalid_token"
    with pytest.raises(CredentialRejected):  # a malformed header is not ignored for the X-API-Key
        parse_presented(authorization, "tg_live_abc")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "basic YTpi", "Digest username=\"a\", realm=\"b\"",
                                           "Negotiate", "tg_live_abc", "eyJhbGciOi.x.y"])
def test_another_scheme_carries_no_bearer_credentials(authorization):
    """RFC 6750 section 3.1: a request in another auth-scheme has no bearer credentials; it is
    judged as one without a credential, or by its X-API-Key (or query parameter) when it has one."""
    assert parse_presented(authorization, "") is None
    presented = parse_presented(authorization, "tg_live_abc")
    assert (presented.kind, presented.value) == (PresentedKind.API_KEY, "tg_live_abc")
    query = QueryApiKey("api_key", ("tg_live_def",))
    assert parse_presented(authorization, "", query).value == "tg_live_def"


def test_nothing_sent_is_none_and_repr_hides_the_secret():
    assert parse_presented("  ", "") is None
    assert "secret" not in repr(parse_presented("Bearer secret", ""))


def test_relation_state_machine():
    assert can_transition(S.PENDING, S.ACTIVE) and can_transition(S.PENDING, S.REJECTED)
    assert can_transition(S.PENDING, S.EXPIRED) and can_transition(S.ACTIVE, S.REVOKED)
    assert can_transition(S.ACTIVE, S.EXPIRED)
    for final in (S.REJECTED, S.REVOKED, S.EXPIRED):
        assert not any(can_transition(final, target) for target in S)
    assert not can_transition(S.PENDING, S.REVOKED) and not can_transition(S.ACTIVE, S.PENDING)
