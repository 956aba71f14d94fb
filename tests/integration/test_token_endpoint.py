"""Tollgate's OAuth 2 endpoints through the real HTTP listener on a free port, on SQLite and
PostgreSQL: token requests and every error of RFC 6749 section 5.2, RFC 9068 access tokens
verified with the published keys and honoured by Check, refresh rotation and reuse detection
(RFC 9700 section 4.14.2), revocation (RFC 7009), introspection (RFC 7662), discovery (RFC 8414)
and the limit on failed client authentication.

Every answer goes through tests/support/oauth.py's OAuthHttp, which fails any answer that echoes
a secret it was sent (client secret, refresh token, token, bearer credential).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jwt
import pytest
from tollgate.v1 import authorization_pb2, common_pb2

from service.domain import opaque
from service.domain.model import PartnerStatus
from tests.support.oauth import (
    INTROSPECT,
    JWKS,
    METADATA,
    REVOKE,
    TOKEN,
    Client,
    OAuthHttp,
    add_api_key,
    add_client,
    add_partner,
    basic_header,
    claims_of,
    header_of,
    revoke_client,
    set_partner_status,
)
from tests.support.world import World, start_world, stop_world

ACME_GRANTS = {"user:write", "organization:read", "court-booking:write", "order:read"}
ACCESS_LIFETIME = 3600
REFRESH_LIFETIME = 30 * 24 * 3600
LEEWAY = 30
CC = {"grant_type": "client_credentials"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
BASIC_CHALLENGE = 'Basic realm="tollgate"'
BEARER_CHALLENGE = 'Bearer realm="tollgate"'
WRONG_SECRET = opaque.generate(opaque.CLIENT_SECRET_PREFIX)


@dataclass
class Site:
    world: World
    http: OAuthHttp
    clients: dict[str, Client]

    def __getitem__(self, name: str) -> Client:
        return self.clients[name]

    @property
    def issuer(self) -> str:
        return self.http.base

    def check(self, operation: str, token: str, **resource: str) -> authorization_pb2.CheckResponse:
        return self.world.check(operation, authorization=f"Bearer {token}", **resource)


def _introspectors(world: World) -> None:
    """A partner with the example policy's gateway role (introspect:read) and an admin partner."""
    add_partner(world, "gate", roles=("gateway",))
    add_partner(world, "root", grants=("admin",))
    add_api_key(world, "gate", "gate")
    add_api_key(world, "root", "root")


@pytest.fixture(scope="module")
def site(module_database_url, tmp_path_factory):
    """One server per module and store, for tests that only read. Failed client authentication is
    not limited here (its limit has tests of its own), so a 401 row of a table stays a 401."""
    world = start_world(module_database_url, tmp_path_factory.mktemp("data"), client_auth_failure_burst=100_000)
    _introspectors(world)
    clients = {
        "acme": add_client(world, "cli_acme", customer_numbers=("C-1",)),
        "narrow": add_client(world, "cli_narrow", scopes=("user:read",)),
        "revoked": add_client(world, "cli_revoked", revoked=True),
        "shady": add_client(world, "cli_shady", "shady"),
        "gate": add_client(world, "cli_gate", "gate"),
        # An id that must be form-encoded in HTTP Basic (RFC 6749 section 2.3.1).
        "encoded": add_client(world, "cli_a+b c%d", "globex"),
        "nocust": add_client(world, "cli_nocust"),
        "refreshing": add_client(world, "cli_refreshing", refresh_tokens=True),
    }
    with OAuthHttp(world) as http:
        yield Site(world, http, clients)
    stop_world(world)


@pytest.fixture
def live(world):
    """A fresh server per test, for tests that change the store: clients that get refresh tokens."""
    _introspectors(world)
    clients = {
        "acme": add_client(world, "cli_acme", customer_numbers=("C-1",), refresh_tokens=True),
        "other": add_client(world, "cli_other", refresh_tokens=True),
        "plain": add_client(world, "cli_plain"),
        "gate": add_client(world, "cli_gate", "gate"),
    }
    with OAuthHttp(world) as http:
        yield Site(world, http, clients)


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert (response.status_code, response.json().get("error")) == (status, error), response.text
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    challenge = response.headers.get("www-authenticate")
    assert challenge == (BASIC_CHALLENGE if status == 401 else None)


def verified(site: Site, token: str) -> dict:
    """The token's claims, its signature checked with a key fetched from the JWKS endpoint (PyJWT)."""
    key = jwt.PyJWKClient(site.issuer + JWKS).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["ES256"], audience=site.issuer, issuer=site.issuer,
                      options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]})


def scopes(text: str) -> set[str]:
    return set(text.split(" "))


# -- errors of the token endpoint ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Site], httpx.Response]
    status: int
    error: str


def raw(body: bytes | str, headers: dict[str, str] = FORM, path: str = TOKEN, basic: str = "acme"):
    """A request with exactly this body, the client authenticating with Basic (unless basic="")."""
    def send(site: Site) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return site.http.post(path, content=content, headers=headers, auth=site[basic].basic if basic else None)
    return send


def grant(client: str = "acme", **params: str):
    return lambda site: site.http.token(site[client], **params)


def chunked_body():
    yield b"grant_type=client_credentials&pad="
    for _ in range(20):
        yield b"x" * 1024


ERROR_CASES = [
    # grant_type
    Case("missing grant_type", grant(), 400, "invalid_request"),
    Case("empty grant_type", grant(grant_type=""), 400, "invalid_request"),
    Case("password grant", grant(grant_type="password", username="alice", password="wonderland-1"),
         400, "unsupported_grant_type"),
    Case("authorization_code grant", grant(grant_type="authorization_code", code="abc"), 400, "unsupported_grant_type"),
    Case("jwt-bearer grant", grant(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer", assertion="a.b.c"),
         400, "unsupported_grant_type"),
    Case("unknown grant", grant(grant_type="magic"), 400, "unsupported_grant_type"),
    # client authentication
    Case("wrong client secret", lambda s: s.http.post(TOKEN, data=CC, auth=(s["acme"].id, WRONG_SECRET)),
         401, "invalid_client"),
    Case("another client's secret", lambda s: s.http.post(TOKEN, data=CC, auth=(s["acme"].id, s["narrow"].secret)),
         401, "invalid_client"),
    Case("unknown client", lambda s: s.http.post(TOKEN, data=CC, auth=("cli_nobody", s["acme"].secret)),
         401, "invalid_client"),
    Case("revoked client", grant("revoked", **CC), 401, "invalid_client"),
    Case("client of a suspended partner", grant("shady", **CC), 401, "invalid_client"),
    Case("no client authentication", lambda s: s.http.post(TOKEN, data=CC), 401, "invalid_client"),
    Case("client_id without a secret", lambda s: s.http.post(TOKEN, data={**CC, "client_id": s["acme"].id}),
         401, "invalid_client"),
    Case("wrong secret in the body", lambda s: s.http.token(Client(s["acme"].id, WRONG_SECRET), via="form", **CC),
         401, "invalid_client"),
    Case("wrong secret in a JSON body", lambda s: s.http.token(Client(s["acme"].id, WRONG_SECRET), via="json", **CC),
         401, "invalid_client"),
    Case("Basic not base64", lambda s: s.http.post(TOKEN, data=CC, headers={"Authorization": "Basic %%%"}),
         401, "invalid_client"),
    Case("Basic without a colon", lambda s: s.http.post(TOKEN, data=CC, headers={
        "Authorization": "Basic " + base64.b64encode(s["acme"].id.encode()).decode()}), 401, "invalid_client"),
    Case("Basic id not form-encoded", lambda s: s.http.post(TOKEN, data=CC, headers={
        "Authorization": "Basic " + base64.b64encode(f"{s['encoded'].id}:{s['encoded'].secret}".encode()).decode()},
        sent=(s["encoded"].secret,)), 401, "invalid_client"),
    Case("Basic and a body secret", lambda s: s.http.post(TOKEN, data={**CC, "client_secret": s["acme"].secret},
                                                          auth=s["acme"].basic), 400, "invalid_request"),
    Case("Basic and another body client_id", lambda s: s.http.post(TOKEN, data={**CC, "client_id": s["narrow"].id},
                                                                   auth=s["acme"].basic), 400, "invalid_request"),
    Case("two Authorization headers", lambda s: s.http.post(TOKEN, content=b"grant_type=client_credentials", headers=[
        *FORM.items(), ("Authorization", "Basic eDp5"), ("Authorization", "Basic eDp5")]), 400, "invalid_request"),
    # RFC 6749 section 3.2: parameters at most once, and in the body
    Case("repeated grant_type", raw("grant_type=client_credentials&grant_type=client_credentials"),
         400, "invalid_request"),
    Case("repeated scope", raw("grant_type=client_credentials&scope=user:read&scope=order:read"),
         400, "invalid_request"),
    Case("repeated client_secret in the body", lambda s: s.http.post(TOKEN, content=(
        f"grant_type=client_credentials&client_id={s['acme'].id}&client_secret={s['acme'].secret}"
        f"&client_secret={s['acme'].secret}").encode(), headers=FORM, sent=(s["acme"].secret,)),
        400, "invalid_request"),
    Case("repeated JSON member", raw('{"grant_type":"client_credentials","grant_type":"client_credentials"}', JSON),
         400, "invalid_request"),
    Case("parameters in the URL", lambda s: s.http.post(TOKEN + "?scope=user:read", data=CC, auth=s["acme"].basic),
         400, "invalid_request"),
    Case("client secret in the URL", lambda s: s.http.post(
        f"{TOKEN}?client_id={s['acme'].id}&client_secret={s['acme'].secret}", data=CC, sent=(s["acme"].secret,)),
        400, "invalid_request"),
    # the body
    Case("text/plain body", raw("grant_type=client_credentials", {"Content-Type": "text/plain"}),
         400, "invalid_request"),
    Case("multipart body", raw('--b\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials'
                               '\r\n--b--\r\n', {"Content-Type": "multipart/form-data; boundary=b"}),
         400, "invalid_request"),
    Case("no content type", raw("grant_type=client_credentials", {}), 400, "invalid_request"),
    Case("body over 16 KiB", lambda s: s.http.post(TOKEN, data={**CC, "pad": "x" * 16 * 1024}, auth=s["acme"].basic),
         400, "invalid_request"),
    Case("chunked body over 16 KiB", lambda s: s.http.post(TOKEN, content=chunked_body(), headers=FORM,
                                                           auth=s["acme"].basic), 400, "invalid_request"),
    Case("non-UTF-8 form", raw(b"grant_type=client_credentials&scope=\xff\xfe"), 400, "invalid_request"),
    Case("non-UTF-8 JSON", raw(b'{"grant_type":"client_credentials","scope":"\xff"}', JSON), 400, "invalid_request"),
    Case("not a form", raw("grant_type"), 400, "invalid_request"),
    Case("NUL in a parameter", raw("grant_type=client_credentials&scope=user:read%00"), 400, "invalid_request"),
    Case("65 form parameters", raw("grant_type=client_credentials&" + "&".join(f"p{i}=v" for i in range(64))),
         400, "invalid_request"),
    Case("invalid JSON", raw('{"grant_type":', JSON), 400, "invalid_request"),
    Case("JSON array", raw("[]", JSON), 400, "invalid_request"),
    Case("JSON array of pairs", raw('[["grant_type","client_credentials"]]', JSON), 400, "invalid_request"),
    Case("JSON array of numbers", raw("[1, 2]", JSON), 400, "invalid_request"),
    Case("JSON string", raw('"grant_type=client_credentials"', JSON), 400, "invalid_request"),
    Case("JSON null", raw("null", JSON), 400, "invalid_request"),
    Case("JSON number value", raw('{"grant_type":"client_credentials","scope":1}', JSON), 400, "invalid_request"),
    Case("JSON list value", raw('{"grant_type":["client_credentials"]}', JSON), 400, "invalid_request"),
    Case("JSON null value", raw('{"grant_type":"client_credentials","scope":null}', JSON), 400, "invalid_request"),
    Case("JSON object value", raw('{"grant_type":{"v":"client_credentials"}}', JSON), 400, "invalid_request"),
    Case("JSON boolean value", raw('{"grant_type":"client_credentials","scope":true}', JSON), 400, "invalid_request"),
    # scope (RFC 6749 section 3.3)
    Case("empty scope", grant(scope="", **CC), 400, "invalid_scope"),
    Case("scope with two spaces", grant(scope="user:read  order:read", **CC), 400, "invalid_scope"),
    Case("scope with a leading space", grant(scope=" user:read", **CC), 400, "invalid_scope"),
    Case("scope with a tab", grant(scope="user:read\torder:read", **CC), 400, "invalid_scope"),
    Case("scope with a quote", grant(scope='user:read"', **CC), 400, "invalid_scope"),
    Case("scope with a backslash", grant(scope="user\\read", **CC), 400, "invalid_scope"),
    Case("non-ASCII scope", grant(scope="usér:read", **CC), 400, "invalid_scope"),
    Case("65 scopes", grant(scope=" ".join(["user:read"] * 65), **CC), 400, "invalid_scope"),
    Case("unknown scope", grant(scope="nosuch:read", **CC), 400, "invalid_scope"),
    Case("unknown level", grant(scope="user:sometimes", **CC), 400, "invalid_scope"),
    Case("scope beyond the partner's grants", grant(scope="organization:write", **CC), 400, "invalid_scope"),
    Case("one of two scopes beyond the grants", grant(scope="user:read relations:admin", **CC),
         400, "invalid_scope"),
    Case("admin scope", grant(scope="admin", **CC), 400, "invalid_scope"),
    Case("alias beyond the grants", grant(scope="write:orders", **CC), 400, "invalid_scope"),
    Case("scope beyond the client's own scopes", grant("narrow", scope="user:write", **CC), 400, "invalid_scope"),
    Case("a secret as scope", lambda s: s.http.post(TOKEN, data={**CC, "scope": s["acme"].secret},
                                                    auth=s["acme"].basic, sent=(s["acme"].secret,)),
         400, "invalid_scope"),
    # the refresh_token grant
    Case("refresh grant without refresh_token", grant(grant_type="refresh_token"), 400, "invalid_request"),
    Case("malformed refresh token", grant("refreshing", grant_type="refresh_token", refresh_token="tg_rt_garbage"),
         400, "invalid_grant"),
    Case("unknown refresh token", grant("refreshing", grant_type="refresh_token",
                                        refresh_token=opaque.generate(opaque.REFRESH_TOKEN_PREFIX)),
         400, "invalid_grant"),
    Case("an API key as refresh token", lambda s: s.http.token(s["refreshing"], grant_type="refresh_token",
                                                               refresh_token=s.world.keys["acme"]),
         400, "invalid_grant"),
    Case("refresh grant of a client without refresh tokens",
         grant(grant_type="refresh_token", refresh_token=opaque.generate(opaque.REFRESH_TOKEN_PREFIX)),
         400, "unauthorized_client"),
    Case("refresh grant of a revoked client", grant("revoked", grant_type="refresh_token",
                                                    refresh_token=opaque.generate(opaque.REFRESH_TOKEN_PREFIX)),
         401, "invalid_client"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_token_endpoint_errors(site, case):
    assert_oauth_error(case.send(site), case.status, case.error)


def test_a_scope_the_caller_sent_is_never_echoed(site):
    secret = site["acme"].secret
    response = site.http.post(TOKEN, data={**CC, "scope": f"user:read {secret}"}, auth=site["acme"].basic)
    assert_oauth_error(response, 400, "invalid_scope")
    assert secret not in response.text and "2" in response.json()["error_description"]  # named by position


@pytest.mark.parametrize("request_line", [("GET", TOKEN, 405), ("PUT", REVOKE, 405), ("POST", "/oauth/authorize", 404),
                                          ("GET", "/oauth/token/x", 404)])
def test_wrong_methods_and_paths_answer_json(site, request_line):
    method, path, status = request_line
    response = httpx.request(method, site.issuer + path, timeout=10)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request" and response.headers["cache-control"] == "no-store"


# -- successful client_credentials grants --------------------------------------------------------


@pytest.mark.parametrize("via", ["basic", "form", "json"])
def test_client_credentials_by_each_authentication_method(site, via):
    response = site.http.token(site["acme"], via=via, scope="user:read", **CC)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token by default
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", ACCESS_LIFETIME, "user:read")
    assert claims_of(body["access_token"])["client_id"] == site["acme"].id


def test_basic_credentials_are_form_decoded(site):
    client = site["encoded"]
    response = site.http.post(TOKEN, data=CC, headers={"Authorization": basic_header(client.id, client.secret)},
                              sent=(client.secret,))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["sub"] == "cli_a+b c%d"


@dataclass(frozen=True)
class ScopeCase:
    name: str
    client: str
    requested: str | None
    granted: set[str]


SCOPE_CASES = [
    ScopeCase("omitted: the partner's grants", "acme", None, ACME_GRANTS),
    ScopeCase("omitted: the client's own scopes", "narrow", None, {"user:read"}),
    ScopeCase("one scope", "acme", "user:read", {"user:read"}),
    ScopeCase("the level granted", "acme", "user:write", {"user:write"}),
    ScopeCase("two scopes", "acme", "organization:read order:read", {"organization:read", "order:read"}),
    ScopeCase("an alias in OAuth spelling", "acme", "read:bookings", {"read:bookings"}),
    ScopeCase("a repeated scope once", "acme", "user:read user:read", {"user:read"}),
]


@pytest.mark.parametrize("case", SCOPE_CASES, ids=[c.name for c in SCOPE_CASES])
def test_granted_scopes(site, case):
    params = {} if case.requested is None else {"scope": case.requested}
    body = site.http.issue(site[case.client], **params)
    assert scopes(body["scope"]) == case.granted and len(body["scope"].split(" ")) == len(case.granted)
    assert claims_of(body["access_token"])["scope"] == body["scope"]


def test_access_tokens_are_rfc9068_jwts_verifiable_with_the_published_keys(site):
    body = site.http.issue(site["acme"])
    token = body["access_token"]
    claims = verified(site, token)
    header = header_of(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    published = site.http.get(JWKS).json()["keys"]
    assert header["kid"] in {key["kid"] for key in published}
    assert all("d" not in key for key in published), "a private key member is published"
    assert claims["iss"] == claims["aud"] == site.issuer
    assert claims["sub"] == claims["client_id"] == site["acme"].id
    assert claims["exp"] - claims["iat"] == ACCESS_LIFETIME
    assert abs(claims["iat"] - site.world.clock.now().timestamp()) < 5
    assert scopes(claims["scope"]) == ACME_GRANTS
    assert claims["customer_numbers"] == ["C-1"]
    assert "rt_family" not in claims  # no refresh token, no family
    other = claims_of(site.http.issue(site["acme"])["access_token"])
    assert other["jti"] != claims["jti"]


def test_a_tampered_token_fails_verification_with_the_published_keys(site):
    token = site.http.issue(site["acme"], scope="user:read")["access_token"]
    head, payload, signature = token.split(".")
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(b"user:read", b"user:wrte")
    ).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verified(site, f"{head}.{forged}.{signature}")
    assert site.check("getUser", f"{head}.{forged}.{signature}", user_id="u-active").reason == "invalid_token"


# -- Check honours the tokens ---------------------------------------------------------------------


@dataclass(frozen=True)
class CheckCase:
    name: str
    scope: str | None
    operation: str
    resource: dict
    reason: str


CHECK_CASES = [
    CheckCase("all grants: read a related user", None, "getUser", {"user_id": "u-active"}, ""),
    CheckCase("all grants: write a related user", None, "updateUser", {"user_id": "u-active"}, ""),
    CheckCase("all grants: an unrelated user", None, "getUser", {"user_id": "u-none"}, "user_access_denied"),
    CheckCase("user:read: read", "user:read", "getUser", {"user_id": "u-active"}, ""),
    CheckCase("user:read: write", "user:read", "updateUser", {"user_id": "u-active"}, "insufficient_scope"),
    CheckCase("user:read: book", "user:read", "createCourtBooking", {}, "insufficient_scope"),
    CheckCase("read:bookings: book", "read:bookings", "createCourtBooking", {}, "insufficient_scope"),
    CheckCase("court-booking:write: book", "court-booking:write", "createCourtBooking", {}, ""),
    CheckCase("own customer's orders", "order:read", "listCustomerOrders", {"customer_id": "C-1"}, ""),
    CheckCase("another customer's orders", "order:read", "listCustomerOrders", {"customer_id": "C-2"},
              "customer_access_denied"),
]


@pytest.mark.parametrize("case", CHECK_CASES, ids=[c.name for c in CHECK_CASES])
def test_check_honours_the_tokens(site, case):
    params = {} if case.scope is None else {"scope": case.scope}
    token = site.http.issue(site["acme"], **params)["access_token"]
    response = site.check(case.operation, token, **case.resource)
    assert response.reason == case.reason, response.message
    assert response.allowed is (case.reason == "")
    if response.allowed:
        assert response.principal.partner_id == "acme"
        assert common_pb2.CredentialKind.Name(response.principal.credential_kind) \
            == "CREDENTIAL_KIND_OAUTH_CLIENT"
        assert response.principal.credential_id == f"{site['acme'].id}:{claims_of(token)['jti']}"


def test_a_client_without_customer_numbers_reaches_no_customer(site):
    token = site.http.issue(site["nocust"])["access_token"]
    assert "customer_numbers" not in claims_of(token) and "order:read" in claims_of(token)["scope"].split()
    assert site.check("listCustomerOrders", token, customer_id="C-1").reason == "customer_access_denied"


# -- discovery (RFC 8414) -------------------------------------------------------------------------


def test_metadata_names_working_endpoints(site):
    response = site.http.get(METADATA)
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public")
    metadata = response.json()
    base = site.issuer
    assert metadata["issuer"] == base
    assert {name: metadata[name] for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint",
                                              "jwks_uri")} == {
        "token_endpoint": base + TOKEN, "revocation_endpoint": base + REVOKE,
        "introspection_endpoint": base + INTROSPECT, "jwks_uri": base + JWKS}
    assert metadata["grant_types_supported"] == ["client_credentials", "refresh_token"]
    assert "password" not in str(metadata["grant_types_supported"])
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert metadata[f"{name}_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert {"introspect:read", "user:read", "court-booking:write", "admin"} <= set(metadata["scopes_supported"])

    # Each endpoint it names answers as that endpoint.
    issued = httpx.post(metadata["token_endpoint"], data=CC, auth=site["acme"].basic, timeout=10)
    assert issued.status_code == 200 and claims_of(issued.json()["access_token"])["iss"] == metadata["issuer"]
    token = issued.json()["access_token"]
    found = httpx.post(metadata["introspection_endpoint"], data={"token": token}, auth=site["gate"].basic, timeout=10)
    assert found.json()["active"] is True
    keys = httpx.get(metadata["jwks_uri"], timeout=10).json()["keys"]
    assert header_of(token)["kid"] in {key["kid"] for key in keys}
    unknown = httpx.post(metadata["revocation_endpoint"], data={"token": "nothing-known"}, auth=site["acme"].basic,
                         timeout=10)
    assert unknown.status_code == 200


def test_jwks_publishes_public_keys_only(site):
    response = site.http.get(JWKS)
    assert response.status_code == 200 and response.headers["cache-control"].startswith("public")
    keys = response.json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC" and keys[0]["alg"] == "ES256" and keys[0]["use"] == "sig"
    assert not {"d", "p", "q"} & set(keys[0])


# -- refresh tokens --------------------------------------------------------------------------------


def test_refresh_tokens_are_off_unless_the_client_has_them(live):
    plain = live.http.issue(live["plain"])
    assert "refresh_token" not in plain and "rt_family" not in claims_of(plain["access_token"])
    issued = live.http.issue(live["acme"])
    assert opaque.well_formed(issued["refresh_token"], opaque.REFRESH_TOKEN_PREFIX)
    assert claims_of(issued["access_token"])["rt_family"].startswith("rtf_")


def test_rotation_spends_the_old_token_and_its_reuse_revokes_the_family(live):
    client = live["acme"]
    first = live.http.issue(client)
    second = live.http.refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.headers["cache-control"] == "no-store"
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert scopes(rotated["scope"]) == ACME_GRANTS
    family = claims_of(first["access_token"])["rt_family"]
    assert claims_of(rotated["access_token"])["rt_family"] == family
    assert live.check("getUser", rotated["access_token"], user_id="u-active").allowed
    assert live.check("getUser", first["access_token"], user_id="u-active").allowed

    # The spent token again: someone holds a copy. Refused, and the whole family goes.
    reused = live.http.refresh(client, first["refresh_token"])
    assert_oauth_error(reused, 400, "invalid_grant")
    assert_oauth_error(live.http.refresh(client, rotated["refresh_token"]), 400, "invalid_grant")
    for token in (first["access_token"], rotated["access_token"]):
        response = live.check("getUser", token, user_id="u-active")
        assert (response.allowed, response.reason) == (False, "token_revoked")
    with live.world.seed() as repos:
        assert repos.refresh_tokens.get_family(family).revoked_at is not None
    # Tokens of another grant of the same client are untouched.
    other = live.http.issue(client)
    assert live.http.refresh(client, other["refresh_token"]).status_code == 200


def test_a_refresh_may_narrow_the_scope_but_never_widen_it(live):
    client = live["acme"]
    issued = live.http.issue(client)
    narrowed = live.http.refresh(client, issued["refresh_token"], scope="user:read")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "user:read"
    assert claims_of(narrowed.json()["access_token"])["scope"] == "user:read"
    assert live.check("updateUser", narrowed.json()["access_token"], user_id="u-active").reason == "insufficient_scope"
    # Omitted: the scope originally granted (RFC 6749 section 6).
    again = live.http.refresh(client, narrowed.json()["refresh_token"])
    assert scopes(again.json()["scope"]) == ACME_GRANTS

    small = live.http.issue(client, scope="user:read")
    widened = live.http.refresh(client, small["refresh_token"], scope="user:write")
    assert_oauth_error(widened, 400, "invalid_scope")
    assert_oauth_error(live.http.refresh(client, small["refresh_token"], scope="user:read organization:read"),
                       400, "invalid_scope")
    # A refused refresh does not spend the token: it still rotates once, keeping its scope.
    kept = live.http.refresh(client, small["refresh_token"])
    assert kept.status_code == 200, kept.text
    assert kept.json()["scope"] == "user:read"


def test_a_refresh_token_is_bound_to_its_client(live):
    issued = live.http.issue(live["acme"])
    stolen = live.http.refresh(live["other"], issued["refresh_token"])
    assert_oauth_error(stolen, 400, "invalid_grant")
    # The attempt neither spent nor revoked it.
    assert live.check("getUser", issued["access_token"], user_id="u-active").allowed
    mine = live.http.refresh(live["acme"], issued["refresh_token"])
    assert mine.status_code == 200, mine.text
    assert claims_of(mine.json()["access_token"])["client_id"] == live["acme"].id


def test_a_refresh_token_expires_after_its_own_lifetime(live):
    client = live["acme"]
    issued = live.http.issue(client)
    live.world.clock.advance(REFRESH_LIFETIME - 5)
    rotated = live.http.refresh(client, issued["refresh_token"])
    assert rotated.status_code == 200, rotated.text  # the access token expired long ago; the refresh token did not
    new = rotated.json()
    assert claims_of(new["access_token"])["iat"] == int(live.world.clock.now().timestamp())
    live.world.clock.advance(REFRESH_LIFETIME + 1)
    assert_oauth_error(live.http.refresh(client, new["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(live.http.refresh(client, new["refresh_token"]), 400, "invalid_grant")
    found = live.http.introspect(new["refresh_token"], client=live["gate"])
    assert found.json() == {"active": False}


def test_refresh_of_a_suspended_or_revoked_client_is_refused(live):
    acme, other = live.http.issue(live["acme"]), live.http.issue(live["other"])
    set_partner_status(live.world, "acme", PartnerStatus.SUSPENDED)
    assert_oauth_error(live.http.refresh(live["acme"], acme["refresh_token"]), 401, "invalid_client")
    set_partner_status(live.world, "acme", PartnerStatus.ACTIVE)
    revoke_client(live.world, live["other"].id)
    assert_oauth_error(live.http.refresh(live["other"], other["refresh_token"]), 401, "invalid_client")
    assert live.http.refresh(live["acme"], acme["refresh_token"]).status_code == 200


# -- what denies at the very next Check -----------------------------------------------------------


def test_suspending_the_partner_denies_its_clients_tokens_at_the_next_check(live):
    token = live.http.issue(live["acme"])["access_token"]
    assert live.check("getUser", token, user_id="u-active").allowed  # cached and memoized now
    set_partner_status(live.world, "acme", PartnerStatus.SUSPENDED)
    response = live.check("getUser", token, user_id="u-active")
    assert (response.allowed, response.reason) == (False, "token_revoked")
    assert_oauth_error(live.http.token(live["acme"], **CC), 401, "invalid_client")
    set_partner_status(live.world, "acme", PartnerStatus.ACTIVE)
    assert live.check("getUser", token, user_id="u-active").allowed


def test_revoking_the_client_denies_its_tokens_at_the_next_check(live):
    token = live.http.issue(live["plain"])["access_token"]
    assert live.check("getUser", token, user_id="u-active").allowed
    revoke_client(live.world, live["plain"].id)
    response = live.check("getUser", token, user_id="u-active")
    assert (response.allowed, response.reason) == (False, "token_revoked")
    assert_oauth_error(live.http.token(live["plain"], **CC), 401, "invalid_client")


# -- revocation (RFC 7009) --------------------------------------------------------------------------


def test_revoking_a_refresh_token_revokes_its_family(live):
    client = live["acme"]
    issued = live.http.issue(client)
    rotated = live.http.refresh(client, issued["refresh_token"]).json()
    assert live.check("getUser", rotated["access_token"], user_id="u-active").allowed
    response = live.http.revoke(client, rotated["refresh_token"], token_type_hint="refresh_token")
    assert (response.status_code, response.json()) == (200, {})
    assert response.headers["cache-control"] == "no-store"
    for token in (issued["access_token"], rotated["access_token"]):
        assert live.check("getUser", token, user_id="u-active").reason == "token_revoked"
    assert_oauth_error(live.http.refresh(client, rotated["refresh_token"]), 400, "invalid_grant")
    # Revoking it again, or the family's spent token, is no error.
    assert live.http.revoke(client, rotated["refresh_token"]).status_code == 200
    assert live.http.revoke(client, issued["refresh_token"]).status_code == 200


def test_revoking_an_access_token_revokes_that_token_only(live):
    client = live["acme"]
    issued, sibling = live.http.issue(client), live.http.issue(client)
    assert live.check("getUser", issued["access_token"], user_id="u-active").allowed
    # The hint is wrong on purpose: it is only a hint (RFC 7009 section 2.1).
    response = live.http.revoke(client, issued["access_token"], token_type_hint="refresh_token")
    assert (response.status_code, response.json()) == (200, {})
    assert live.check("getUser", issued["access_token"], user_id="u-active").reason == "token_revoked"
    assert live.check("getUser", sibling["access_token"], user_id="u-active").allowed
    # Its refresh token still rotates, and the new access token is allowed.
    rotated = live.http.refresh(client, issued["refresh_token"])
    assert rotated.status_code == 200
    assert live.check("getUser", rotated.json()["access_token"], user_id="u-active").allowed
    assert live.http.revoke(client, issued["access_token"]).status_code == 200  # again: no error


def test_revoking_another_clients_token_is_refused_and_changes_nothing(live):
    issued = live.http.issue(live["acme"])
    for token in (issued["refresh_token"], issued["access_token"]):
        assert_oauth_error(live.http.revoke(live["other"], token), 400, "invalid_grant")
    assert live.check("getUser", issued["access_token"], user_id="u-active").allowed
    assert live.http.refresh(live["acme"], issued["refresh_token"]).status_code == 200


@pytest.mark.parametrize("token", [
    pytest.param(lambda w: opaque.generate(opaque.REFRESH_TOKEN_PREFIX), id="unknown refresh token"),
    pytest.param(lambda w: "tg_rt_not-even-well-formed", id="malformed refresh token"),
    pytest.param(lambda w: "garbage", id="garbage"),
    pytest.param(lambda w: w.jwt("ec"), id="another issuer's token"),
])
def test_revoking_an_unknown_token_answers_200(site, token):
    response = site.http.revoke(site["acme"], token(site.world))
    assert (response.status_code, response.json()) == (200, {})
    assert response.headers["cache-control"] == "no-store"


def test_revocation_errors(live):
    issued = live.http.issue(live["acme"])
    key = live.world.keys["acme"]
    assert_oauth_error(live.http.revoke(live["acme"], key), 400, "unsupported_token_type")
    assert live.world.check("getUser", api_key=key, user_id="u-active").allowed
    assert_oauth_error(live.http.revoke(None, issued["refresh_token"]), 401, "invalid_client")
    assert_oauth_error(live.http.revoke(Client(live["acme"].id, WRONG_SECRET), issued["access_token"]),
                       401, "invalid_client")
    assert_oauth_error(live.http.post(REVOKE, data={}, auth=live["acme"].basic), 400, "invalid_request")
    assert_oauth_error(live.http.post(REVOKE, content=b"token=a&token=b", headers=FORM, auth=live["acme"].basic),
                       400, "invalid_request")
    # None of those revoked anything.
    assert live.check("getUser", issued["access_token"], user_id="u-active").allowed
    assert live.http.refresh(live["acme"], issued["refresh_token"]).status_code == 200


# -- introspection (RFC 7662) -----------------------------------------------------------------------


def introspectors(site: Site) -> dict[str, dict]:
    """Callers allowed to introspect: a gateway client, a gateway API key, an admin API key."""
    return {"gateway client": {"client": site["gate"]}, "gateway key": {"bearer": site.world.keys["gate"]},
            "admin key": {"bearer": site.world.keys["root"]}}


def test_introspection_of_live_tokens(live):
    issued = live.http.issue(live["acme"])
    claims = claims_of(issued["access_token"])
    for name, caller in introspectors(live).items():
        response = live.http.introspect(issued["access_token"], **caller)
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store", name
        body = response.json()
        assert scopes(body.pop("scope")) == ACME_GRANTS
        assert body == {"active": True, "client_id": "cli_acme", "sub": "cli_acme", "token_type": "Bearer",
                        "exp": claims["exp"], "iss": live.issuer, "aud": live.issuer, "jti": claims["jti"]}, name

    refresh = live.http.introspect(issued["refresh_token"], client=live["gate"]).json()
    assert scopes(refresh.pop("scope")) == ACME_GRANTS
    assert refresh == {"active": True, "client_id": "cli_acme", "sub": "cli_acme", "token_type": "refresh_token",
                       "iat": claims["iat"], "exp": claims["iat"] + REFRESH_LIFETIME, "iss": live.issuer}

    key = live.http.introspect(live.world.keys["acme-reader"], bearer=live.world.keys["gate"]).json()
    assert key == {"active": True, "scope": "user:read", "client_id": live.world.key_ids["acme-reader"], "sub": "acme",
                   "token_type": "api_key"}


def test_introspection_reports_the_narrowed_scope(live):
    token = live.http.issue(live["acme"], scope="read:bookings")["access_token"]
    body = live.http.introspect(token, client=live["gate"]).json()
    assert (body["active"], body["scope"]) == (True, "court-booking:read")


def _revoked_access(site):
    token = site.http.issue(site["acme"])["access_token"]
    site.http.revoke(site["acme"], token)
    return token


def _family_revoked_access(site):
    issued = site.http.issue(site["acme"])
    site.http.revoke(site["acme"], issued["refresh_token"])
    return issued["access_token"]


def _family_revoked_refresh(site):
    issued = site.http.issue(site["acme"])
    site.http.revoke(site["acme"], issued["access_token"])  # the access token only: the refresh token stays
    assert site.http.introspect(issued["refresh_token"], client=site["gate"]).json()["active"] is True
    site.http.revoke(site["acme"], issued["refresh_token"])
    return issued["refresh_token"]


def _rotated_refresh(site):
    issued = site.http.issue(site["acme"])
    site.http.refresh(site["acme"], issued["refresh_token"])
    return issued["refresh_token"]


def _expired_access(site):
    token = site.http.issue(site["acme"])["access_token"]
    site.world.clock.advance(ACCESS_LIFETIME + LEEWAY + 1)
    return token


def _expired_refresh(site):
    token = site.http.issue(site["acme"])["refresh_token"]
    site.world.clock.advance(REFRESH_LIFETIME + 1)
    return token


def _of_revoked_client(kind):
    def make(site):
        issued = site.http.issue(site["acme"])
        revoke_client(site.world, site["acme"].id)
        return issued[kind]
    return make


def _of_suspended_partner(kind):
    def make(site):
        issued = site.http.issue(site["acme"])
        set_partner_status(site.world, "acme", PartnerStatus.SUSPENDED)
        return issued[kind]
    return make


def _forged(site):
    head, payload, _ = site.http.issue(site["acme"])["access_token"].split(".")
    other = site.http.issue(site["other"])["access_token"].split(".")[2]
    return f"{head}.{payload}.{other}"


INACTIVE_AS_SEEDED = [
    pytest.param(lambda s: "garbage", id="garbage"),
    pytest.param(lambda s: "a.b.c", id="not a JWT"),
    pytest.param(lambda s: opaque.generate(opaque.REFRESH_TOKEN_PREFIX), id="unknown refresh token"),
    pytest.param(lambda s: opaque.generate(opaque.API_KEY_PREFIX), id="unknown API key"),
    pytest.param(lambda s: s.world.jwt("ec"), id="another issuer's token"),
    pytest.param(lambda s: s.world.keys["acme-revoked"], id="revoked API key"),
    pytest.param(lambda s: s.world.keys["acme-expired"], id="expired API key"),
    pytest.param(lambda s: s.world.keys["shady"], id="API key of a suspended partner"),
]
# Each changes the store or moves the clock: a fresh world per case.
INACTIVE_AFTER_A_CHANGE = [
    pytest.param(_revoked_access, id="revoked access token"),
    pytest.param(_family_revoked_access, id="access token of a revoked family"),
    pytest.param(_family_revoked_refresh, id="revoked refresh token"),
    pytest.param(_rotated_refresh, id="rotated refresh token"),
    pytest.param(_expired_access, id="expired access token"),
    pytest.param(_expired_refresh, id="expired refresh token"),
    pytest.param(_of_revoked_client("access_token"), id="access token of a revoked client"),
    pytest.param(_of_revoked_client("refresh_token"), id="refresh token of a revoked client"),
    pytest.param(_of_suspended_partner("access_token"), id="access token of a suspended partner"),
    pytest.param(_of_suspended_partner("refresh_token"), id="refresh token of a suspended partner"),
    pytest.param(_forged, id="access token with another token's signature"),
]


def assert_inactive(site: Site, token: str) -> None:
    response = site.http.introspect(token, client=site["gate"])
    assert (response.status_code, response.json()) == (200, {"active": False})
    assert response.headers["cache-control"] == "no-store"
    assert site.http.introspect(token, bearer=site.world.keys["root"]).json() == {"active": False}


@pytest.mark.parametrize("make", INACTIVE_AS_SEEDED)
def test_introspection_of_inactive_credentials(site, make):
    assert_inactive(site, make(site))


@pytest.mark.parametrize("make", INACTIVE_AFTER_A_CHANGE)
def test_introspection_of_tokens_made_inactive(live, make):
    assert_inactive(live, make(live))


@dataclass(frozen=True)
class CallerCase:
    name: str
    caller: Callable[[Site], dict]
    status: int
    error: str
    challenge: str | None


CALLER_CASES = [
    CallerCase("no credentials", lambda s: {}, 401, "invalid_client", BEARER_CHALLENGE),
    CallerCase("wrong client secret", lambda s: {"client": Client(s["gate"].id, WRONG_SECRET)},
               401, "invalid_client", BASIC_CHALLENGE),
    CallerCase("revoked client", lambda s: {"client": s["revoked"]}, 401, "invalid_client", BASIC_CHALLENGE),
    CallerCase("client of a suspended partner", lambda s: {"client": s["shady"]}, 401, "invalid_client",
               BASIC_CHALLENGE),
    CallerCase("unknown API key", lambda s: {"bearer": opaque.generate(opaque.API_KEY_PREFIX)},
               401, "invalid_client", BEARER_CHALLENGE),
    CallerCase("expired API key", lambda s: {"bearer": s.world.keys["acme-expired"]}, 401, "invalid_client",
               BEARER_CHALLENGE),
    CallerCase("API key of a suspended partner", lambda s: {"bearer": s.world.keys["shady"]}, 401, "invalid_client",
               BEARER_CHALLENGE),
    CallerCase("another issuer's invalid JWT", lambda s: {"bearer": s.world.jwt("ec", lifetime=-3600)},
               401, "invalid_client", BEARER_CHALLENGE),
    CallerCase("client without the grant", lambda s: {"client": s["acme"]}, 403, "insufficient_scope", None),
    CallerCase("API key without the grant", lambda s: {"bearer": s.world.keys["acme"]}, 403, "insufficient_scope",
               None),
    CallerCase("platform key without the grant", lambda s: {"bearer": s.world.keys["platform"]},
               403, "insufficient_scope", None),
    CallerCase("access token without the grant", lambda s: {"bearer": s.http.issue(s["acme"])["access_token"]},
               403, "insufficient_scope", None),
]


@pytest.mark.parametrize("case", CALLER_CASES, ids=[c.name for c in CALLER_CASES])
def test_introspection_is_for_authenticated_callers_with_the_grant(site, case):
    response = site.http.introspect(site.world.keys["acme"], **case.caller(site))
    assert (response.status_code, response.json()["error"]) == (case.status, case.error), response.text
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers.get("www-authenticate") == case.challenge
    assert response.headers["cache-control"] == "no-store"


def test_introspection_needs_a_token(site):
    response = site.http.post(INTROSPECT, data={}, auth=site["gate"].basic)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# -- failed client authentication is limited ----------------------------------------------------


@pytest.fixture
def limited(database_url, tmp_path):
    world = start_world(database_url, tmp_path, client_auth_failure_burst=3, client_auth_failure_rate_per_second=0.1)
    clients = {"a": add_client(world, "cli_a"), "b": add_client(world, "cli_b"), "c": add_client(world, "cli_c")}
    with OAuthHttp(world) as http:
        yield Site(world, http, clients)
    stop_world(world)


def assert_limited(response: httpx.Response) -> None:
    assert (response.status_code, response.json()["error"]) == (429, "temporarily_unavailable"), response.text
    assert 1 <= int(response.headers["retry-after"]) <= 10
    assert response.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in response.headers


def test_successful_authentication_is_not_limited(limited):
    for _ in range(8):
        assert limited.http.token(limited["a"], **CC).status_code == 200


def test_after_the_burst_of_failures_even_the_right_secret_waits(limited):
    for _ in range(3):
        assert_oauth_error(limited.http.token(Client("cli_a", WRONG_SECRET), **CC), 401, "invalid_client")
    assert_limited(limited.http.token(limited["a"], **CC))
    assert_limited(limited.http.token(limited["a"], via="json", **CC))
    # Every endpoint that authenticates clients shares the limit.
    assert_limited(limited.http.revoke(limited["a"], "garbage"))
    assert_limited(limited.http.introspect("garbage", client=limited["a"]))


def test_failures_are_limited_per_address_across_client_ids(limited):
    # One failure for each of three ids: no id is over its own burst, the address is.
    for client_id in ("cli_a", "cli_b", "cli_nobody"):
        assert_oauth_error(limited.http.token(Client(client_id, WRONG_SECRET), **CC), 401, "invalid_client")
    assert_limited(limited.http.token(limited["c"], **CC))
    # The address is the peer's: a client-sent forwarding header does not choose another bucket.
    assert_limited(limited.http.post(TOKEN, data=CC, auth=limited["c"].basic, headers={
        "X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"}))
    # Discovery does not authenticate clients and is not limited.
    assert limited.http.get(JWKS).status_code == 200
