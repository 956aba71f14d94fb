"""tollgate.v1.Tokens, the gRPC twin of the OAuth endpoints, over a real channel on SQLite and
PostgreSQL: issue, refresh, revoke and introspect; each OAuth error as its gRPC code with the RFC 6749
error code as the ErrorInfo reason; `optional string scope` presence; and one use case behind both
transports (tokens, spent refresh tokens and the failure limit cross from HTTP to gRPC and back)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tollgate.v1 import tokens_pb2 as pb
from tollgate.v1 import tokens_pb2_grpc

from service.domain import opaque
from service.domain.model import PartnerStatus
from tests.support.oauth import Client, OAuthHttp, add_api_key, add_client, add_partner, claims_of, set_partner_status
from tests.support.world import World, start_world, stop_world

ACME_GRANTS = {"user:write", "organization:read", "court-booking:write", "order:read"}
REFRESH_LIFETIME = 30 * 24 * 3600
WRONG_SECRET = opaque.generate(opaque.CLIENT_SECRET_PREFIX)
CC = "client_credentials"
RT = "refresh_token"


@dataclass
class Site:
    world: World
    clients: dict[str, Client]

    def __getitem__(self, name: str) -> Client:
        return self.clients[name]

    @property
    def tokens(self) -> tokens_pb2_grpc.TokensStub:
        return tokens_pb2_grpc.TokensStub(self.world.channel)

    def issue(self, client: Client | None, grant_type: str = CC, **fields) -> pb.IssueTokenResponse:
        request = pb.IssueTokenRequest(grant_type=grant_type, client=client.proto() if client else None, **fields)
        return self.tokens.IssueToken(request, timeout=10)

    def revoke(self, client: Client | None, token: str) -> pb.TokensRevokeTokenResponse:
        request = pb.TokensRevokeTokenRequest(client=client.proto() if client else None, token=token)
        return self.tokens.RevokeToken(request, timeout=10)

    def introspect(self, token: str, client: Client | None = None, metadata=()) -> pb.IntrospectTokenResponse:
        request = pb.IntrospectTokenRequest(token=token, client=client.proto() if client else None)
        return self.tokens.IntrospectToken(request, metadata=metadata, timeout=10)

    def allowed(self, access_token: str) -> str:
        """Check's reason for getUser on a related user with the token ("" when allowed)."""
        return self.world.check("getUser", authorization=f"Bearer {access_token}", user_id="u-active").reason


def _seed(world: World) -> dict[str, Client]:
    add_partner(world, "gate", roles=("gateway",))
    add_api_key(world, "gate", "gate")
    return {
        "acme": add_client(world, "cli_acme", customer_numbers=("C-1",), refresh_tokens=True),
        "other": add_client(world, "cli_other", refresh_tokens=True),
        "revoked": add_client(world, "cli_revoked", revoked=True),
        "shady": add_client(world, "cli_shady", "shady"),
        "gate": add_client(world, "cli_gate", "gate"),
    }


@pytest.fixture(scope="module")
def site(module_database_url, tmp_path_factory):
    """One server per module and store for the error table; failures are not limited here."""
    world = start_world(module_database_url, tmp_path_factory.mktemp("data"), client_auth_failure_burst=100_000)
    yield Site(world, _seed(world))
    stop_world(world)


@pytest.fixture
def live(world):
    return Site(world, _seed(world))


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo


def failure(call: Callable[[], object]) -> Failure:
    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        assert status is not None, "an OAuth error carries a google.rpc.Status"
        infos = []
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                infos.append(info)
        assert len(infos) == 1, "exactly one ErrorInfo"
        return Failure(error.code(), error.details(), infos[0])
    raise AssertionError("the call succeeded but an error was expected")


# -- errors -----------------------------------------------------------------------------------------

UNKNOWN_RT = opaque.generate(opaque.REFRESH_TOKEN_PREFIX)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Site], object]
    code: grpc.StatusCode
    reason: str


INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
ERROR_CASES = [
    Case("no grant_type", lambda s: s.issue(s["acme"], grant_type=""), INVALID_ARGUMENT, "invalid_request"),
    Case("password grant", lambda s: s.issue(s["acme"], grant_type="password"), INVALID_ARGUMENT,
         "unsupported_grant_type"),
    Case("unknown grant", lambda s: s.issue(s["acme"], grant_type="authorization_code"), INVALID_ARGUMENT,
         "unsupported_grant_type"),
    Case("no client", lambda s: s.issue(None), grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("empty client", lambda s: s.issue(Client("", "")), grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("wrong secret", lambda s: s.issue(Client("cli_acme", WRONG_SECRET)), grpc.StatusCode.UNAUTHENTICATED,
         "invalid_client"),
    Case("unknown client", lambda s: s.issue(Client("cli_nobody", s["acme"].secret)),
         grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("revoked client", lambda s: s.issue(s["revoked"]), grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("client of a suspended partner", lambda s: s.issue(s["shady"]), grpc.StatusCode.UNAUTHENTICATED,
         "invalid_client"),
    Case("scope set but empty", lambda s: s.issue(s["acme"], scope=""), INVALID_ARGUMENT, "invalid_scope"),
    Case("scope with two spaces", lambda s: s.issue(s["acme"], scope="user:read  order:read"), INVALID_ARGUMENT,
         "invalid_scope"),
    Case("scope beyond the grants", lambda s: s.issue(s["acme"], scope="organization:write"), INVALID_ARGUMENT,
         "invalid_scope"),
    Case("unknown scope", lambda s: s.issue(s["acme"], scope="nosuch:read"), INVALID_ARGUMENT, "invalid_scope"),
    Case("refresh without a token", lambda s: s.issue(s["acme"], RT), INVALID_ARGUMENT, "invalid_request"),
    Case("unknown refresh token", lambda s: s.issue(s["acme"], RT, refresh_token=UNKNOWN_RT),
         grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant"),
    Case("malformed refresh token", lambda s: s.issue(s["acme"], RT, refresh_token="tg_rt_x"),
         grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant"),
    Case("revoke without a client", lambda s: s.revoke(None, UNKNOWN_RT), grpc.StatusCode.UNAUTHENTICATED,
         "invalid_client"),
    Case("revoke with a wrong secret", lambda s: s.revoke(Client("cli_acme", WRONG_SECRET), UNKNOWN_RT),
         grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("revoke without a token", lambda s: s.revoke(s["acme"], ""), INVALID_ARGUMENT, "invalid_request"),
    Case("revoke an API key", lambda s: s.revoke(s["acme"], s.world.keys["acme"]), INVALID_ARGUMENT,
         "unsupported_token_type"),
    Case("revoke another client's token", lambda s: s.revoke(s["other"], s.issue(s["acme"]).refresh_token),
         grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant"),
    Case("introspect without credentials", lambda s: s.introspect("x"), grpc.StatusCode.UNAUTHENTICATED,
         "invalid_client"),
    Case("introspect with malformed metadata", lambda s: s.introspect("x", metadata=[("authorization", "Token x")]),
         grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("introspect with an unknown key", lambda s: s.introspect("x", metadata=[
        ("x-api-key", opaque.generate(opaque.API_KEY_PREFIX))]), grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("introspect with a wrong secret", lambda s: s.introspect("x", Client("cli_gate", WRONG_SECRET)),
         grpc.StatusCode.UNAUTHENTICATED, "invalid_client"),
    Case("introspect as a client without the grant", lambda s: s.introspect("x", s["acme"]),
         grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope"),
    Case("introspect with a key without the grant", lambda s: s.introspect("x", metadata=[
        ("authorization", s.world.bearer("acme"))]), grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope"),
    Case("introspect without a token", lambda s: s.introspect("", s["gate"]), INVALID_ARGUMENT, "invalid_request"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_oauth_errors_map_to_grpc_codes(site, case):
    found = failure(lambda: case.call(site))
    assert (found.code, found.info.reason) == (case.code, case.reason), found.message
    assert found.info.domain == "tollgate.dev"
    for client in site.clients.values():
        assert client.secret not in found.message
    assert WRONG_SECRET not in found.message and UNKNOWN_RT not in found.message


# -- issue and refresh --------------------------------------------------------------------------------


def test_scope_presence_decides(live):
    unset = live.issue(live["acme"])
    assert set(unset.scope.split(" ")) == ACME_GRANTS
    assert (unset.token_type, unset.expires_in) == ("Bearer", 3600)
    assert opaque.well_formed(unset.refresh_token, opaque.REFRESH_TOKEN_PREFIX)
    claims = claims_of(unset.access_token)
    assert claims["client_id"] == "cli_acme" and claims["customer_numbers"] == ["C-1"]
    assert live.allowed(unset.access_token) == ""

    narrow = live.issue(live["acme"], scope="user:read")
    assert narrow.scope == claims_of(narrow.access_token)["scope"] == "user:read"
    assert failure(lambda: live.issue(live["acme"], scope="")).info.reason == "invalid_scope"

    # On refresh: unset keeps the grant's scope, set narrows it, set but empty is refused (and spends nothing).
    assert failure(lambda: live.issue(live["acme"], RT, refresh_token=unset.refresh_token, scope="")
                   ).info.reason == "invalid_scope"
    narrowed = live.issue(live["acme"], RT, refresh_token=unset.refresh_token, scope="order:read")
    assert narrowed.scope == "order:read"
    kept = live.issue(live["acme"], RT, refresh_token=narrowed.refresh_token)
    assert set(kept.scope.split(" ")) == ACME_GRANTS
    widened = failure(lambda: live.issue(live["acme"], RT, refresh_token=narrow.refresh_token, scope="user:write"))
    assert (widened.code, widened.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_scope")


def test_a_client_without_refresh_tokens_gets_none(live):
    plain = add_client(live.world, "cli_plain")
    issued = live.issue(plain)
    assert issued.refresh_token == "" and "rt_family" not in claims_of(issued.access_token)


def test_one_use_case_behind_both_transports(live):
    client = live["acme"]
    with OAuthHttp(live.world) as http:
        over_http = http.issue(client)
        # An HTTP-issued refresh token rotates over gRPC ...
        over_grpc = live.issue(client, RT, refresh_token=over_http["refresh_token"])
        assert claims_of(over_grpc.access_token)["rt_family"] == claims_of(over_http["access_token"])["rt_family"]
        assert live.allowed(over_grpc.access_token) == ""
        # ... and the gRPC-rotated one over HTTP.
        back = http.refresh(client, over_grpc.refresh_token)
        assert back.status_code == 200, back.text
        # The token spent over HTTP, presented over gRPC, is reuse: the family is revoked everywhere.
        reused = failure(lambda: live.issue(client, RT, refresh_token=over_grpc.refresh_token))
        assert (reused.code, reused.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant")
        assert http.refresh(client, back.json()["refresh_token"]).json()["error"] == "invalid_grant"
        for token in (over_http["access_token"], over_grpc.access_token, back.json()["access_token"]):
            assert live.allowed(token) == "token_revoked"
        # Introspection answers the same over both.
        fresh = live.issue(client)
        by_grpc = live.introspect(fresh.access_token, live["gate"])
        by_http = http.introspect(fresh.access_token, client=live["gate"]).json()
        assert by_http == {"active": True, "scope": by_grpc.scope, "client_id": by_grpc.client_id, "sub": by_grpc.sub,
                           "exp": by_grpc.exp, "token_type": by_grpc.token_type, "iss": by_grpc.iss,
                           "aud": by_grpc.aud, "jti": by_grpc.jti}


# -- revoke -------------------------------------------------------------------------------------------


def test_revoke_over_grpc_denies_at_the_next_check(live):
    client = live["acme"]
    first, second = live.issue(client), live.issue(client)
    assert live.allowed(first.access_token) == "" and live.allowed(second.access_token) == ""
    assert live.revoke(client, first.access_token) == pb.TokensRevokeTokenResponse()
    assert live.allowed(first.access_token) == "token_revoked"
    assert live.revoke(client, second.refresh_token) == pb.TokensRevokeTokenResponse()
    assert live.allowed(second.access_token) == "token_revoked"
    refused = failure(lambda: live.issue(client, RT, refresh_token=second.refresh_token))
    assert (refused.code, refused.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant")
    # Unknown tokens are no error (RFC 7009 section 2.2); another client's are refused and untouched.
    assert live.revoke(client, UNKNOWN_RT) == pb.TokensRevokeTokenResponse()
    assert live.revoke(client, "garbage") == pb.TokensRevokeTokenResponse()
    third = live.issue(client)
    assert failure(lambda: live.revoke(live["other"], third.access_token)).info.reason == "invalid_grant"
    assert live.allowed(third.access_token) == ""


# -- introspect ---------------------------------------------------------------------------------------


def test_introspection_over_grpc(live):
    issued = live.issue(live["acme"])
    claims = claims_of(issued.access_token)
    issuer = claims["iss"]
    for caller in ({"client": live["gate"]}, {"metadata": [("authorization", live.world.bearer("gate"))]},
                   {"metadata": [("x-api-key", live.world.keys["gate"])]}):
        found = live.introspect(issued.access_token, **caller)
        assert set(found.scope.split(" ")) == ACME_GRANTS
        assert (found.active, found.client_id, found.sub, found.exp, found.iat, found.token_type, found.iss,
                found.aud, found.jti) == (True, "cli_acme", "cli_acme", claims["exp"], 0, "Bearer", issuer, issuer,
                                          claims["jti"])

    refresh = live.introspect(issued.refresh_token, live["gate"])
    assert (refresh.active, refresh.client_id, refresh.token_type, refresh.iat, refresh.exp, refresh.iss, refresh.jti) \
        == (True, "cli_acme", "refresh_token", claims["iat"], claims["iat"] + REFRESH_LIFETIME, issuer, "")
    key = live.introspect(live.world.keys["acme-reader"], live["gate"])
    assert (key.active, key.scope, key.client_id, key.sub, key.token_type, key.exp) == (
        True, "user:read", live.world.key_ids["acme-reader"], "acme", "api_key", 0)

    live.revoke(live["acme"], issued.refresh_token)
    set_partner_status(live.world, "shady", PartnerStatus.SUSPENDED)
    for token in (issued.access_token, issued.refresh_token, live.world.keys["shady"], live.world.jwt("rsa"),
                  "garbage"):
        assert live.introspect(token, live["gate"]) == pb.IntrospectTokenResponse()  # active false, nothing else


# -- failed client authentication --------------------------------------------------------------------


def test_failures_are_limited_across_both_transports(database_url, tmp_path):
    world = start_world(database_url, tmp_path, client_auth_failure_burst=3, client_auth_failure_rate_per_second=0.1)
    try:
        live = Site(world, {"acme": add_client(world, "cli_acme"), "other": add_client(world, "cli_other")})
        assert live.issue(live["acme"]).access_token  # successes are not counted
        for _ in range(3):
            assert failure(lambda: live.issue(Client("cli_acme", WRONG_SECRET))).info.reason == "invalid_client"
        limited = failure(lambda: live.issue(live["acme"]))
        assert (limited.code, limited.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "temporarily_unavailable")
        assert 1 <= int(limited.info.metadata["retry_after_seconds"]) <= 10
        # The same client address over HTTP shares the limit: one use case, one limiter.
        with OAuthHttp(world) as http:
            response = http.token(live["other"], grant_type="client_credentials")
        assert response.status_code == 429 and response.json()["error"] == "temporarily_unavailable"
    finally:
        stop_world(world)
