"""tests/support/oidc.py: the real oidc-provider issues RFC 9068 access tokens that verify against
the keys it publishes, rotates its keys across a restart on the same port, and counts requests.

It needs Node.js and node_modules/oidc-provider, which `make test` installs (npm ci) before pytest.
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from tests.support.oidc import AUDIENCE, DEFAULT_CLIENTS, OidcProvider, provider_key

ACME, ACME_POST = DEFAULT_CLIENTS


@pytest.fixture(scope="module")
def idp():
    """One provider for the tests that do not restart it."""
    with OidcProvider() as provider:
        yield provider.start([provider_key("RS256", "harness-rsa-1")])


@pytest.fixture
def own_idp():
    with OidcProvider() as provider:
        yield provider


def published_keys(idp: OidcProvider) -> dict[str, Any]:
    return httpx.get(idp.jwks_uri, timeout=10, trust_env=False).raise_for_status().json()


def verify(idp: OidcProvider, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the verified claims, with the key the token's kid names in the provider's JWKS."""
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(published_keys(idp))[header["kid"]]
    claims = jwt.decode(token, key, algorithms=[header["alg"]], audience=AUDIENCE, issuer=idp.issuer,
                        options={"require": ["iss", "aud", "exp", "iat", "jti", "sub", "client_id"]})
    return header, claims


def test_addresses_come_from_discovery(idp):
    assert idp.issuer == f"http://127.0.0.1:{idp.port}"
    discovery = httpx.get(idp.discovery_url, timeout=10, trust_env=False).json()
    assert discovery["issuer"] == idp.issuer
    assert idp.jwks_uri == discovery["jwks_uri"] == f"{idp.issuer}/jwks"
    assert "client_credentials" in discovery["grant_types_supported"]


def test_a_client_credentials_token_is_an_rfc_9068_jwt(idp):
    token = idp.token(ACME.client_id, ACME.client_secret, scope="user:read read:bookings")
    header, claims = verify(idp, token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": "harness-rsa-1"}
    assert set(claims) == {"iss", "aud", "sub", "client_id", "scope", "jti", "iat", "exp"}
    assert claims["iss"] == idp.issuer and claims["aud"] == AUDIENCE
    assert claims["client_id"] == claims["sub"] == ACME.client_id
    assert claims["scope"] == "user:read read:bookings"
    assert claims["exp"] - claims["iat"] == 300


def test_client_secret_post_and_the_default_resource(idp):
    token = idp.token(ACME_POST.client_id, ACME_POST.client_secret, scope="user:read", resource=None)
    _, claims = verify(idp, token)
    assert claims["aud"] == AUDIENCE and claims["client_id"] == ACME_POST.client_id


def test_refusals_are_oauth_errors(idp):
    unknown_resource = idp.token_response(ACME.client_id, ACME.client_secret, resource="https://other.test")
    assert unknown_resource.status_code == 400 and unknown_resource.json()["error"] == "invalid_target"
    not_granted = idp.token_response(ACME_POST.client_id, ACME_POST.client_secret, scope="court-booking:write")
    assert not_granted.status_code == 400 and not_granted.json()["error"] == "invalid_scope"
    wrong_secret = idp.token_response(ACME.client_id, "wrong")
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"


def test_restart_rotates_keys_and_counts_requests(own_idp):
    old, new = provider_key("RS256", "harness-rsa-old"), provider_key("ES256", "harness-ec-new")
    own_idp.start([old])
    assert own_idp.stats() == {"jwks": 0, "discovery": 0, "token": 0}, "the harness's own requests are not counted"
    assert jwt.get_unverified_header(own_idp.token(ACME.client_id, ACME.client_secret))["kid"] == old.kid
    published_keys(own_idp)
    published_keys(own_idp)
    assert own_idp.stats() == {"jwks": 2, "discovery": 0, "token": 1}

    port = own_idp.port
    own_idp.restart([new, old])  # the new key signs; the old one is still published
    assert own_idp.port == port and own_idp.stats() == {"jwks": 0, "discovery": 0, "token": 0}
    header, claims = verify(own_idp, own_idp.token(ACME.client_id, ACME.client_secret, scope="user:read"))
    assert header["kid"] == new.kid and header["alg"] == "ES256" and claims["scope"] == "user:read"
    assert [key["kid"] for key in published_keys(own_idp)["keys"]] == [new.kid, old.kid]

    own_idp.restart([new])  # the old key is removed
    assert [key["kid"] for key in published_keys(own_idp)["keys"]] == [new.kid]
    assert own_idp.stats()["jwks"] == 1

    code, _ = own_idp.stop()
    assert code == 0, "SIGTERM ends the provider cleanly"
