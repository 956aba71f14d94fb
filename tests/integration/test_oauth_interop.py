"""authlib's OAuth 2 client (requests_client.OAuth2Session) against a real Tollgate on both stores.

A standard client that knows nothing of Tollgate discovers the RFC 8414 metadata, gets tokens with
client_secret_basic and client_secret_post, refreshes with rotation, revokes (RFC 7009) and
introspects (RFC 7662); the access tokens it gets are then judged by native Check and by Envoy
ext_authz on the same gRPC port.

authlib is told to skip nothing: AUTHLIB_INSECURE_TRANSPORT is removed from the environment for
every test. It is not needed: the server listens on loopback (http://127.0.0.1), which authlib
1.9's is_secure_transport accepts as secure (RFC 8252 section 7.3), and its client flows make no
transport check of their own. The metadata test below proves the loopback URLs pass that check.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import httpx
import pytest
import requests
from authlib.common.security import is_secure_transport
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from tollgate.v1 import common_pb2

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.oauth import Client, add_client, add_partner
from tests.support.world import World

ACME_CLIENT = "cli_acme_interop"
GATEWAY_PARTNER = "edge"
GATEWAY_CLIENT = "cli_edge_gateway"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class Server:
    """The running world and what a client learns from its RFC 8414 metadata."""

    world: World
    issuer: str
    metadata: dict

    def client(self, credentials: Client, auth_method: str = "client_secret_basic", **kwargs) -> OAuth2Session:
        # (authlib's httpx client would do as well, but in 1.9 it warns that its httpx support is
        # deprecated in favour of httpx2; its requests session is the supported one.)
        session = OAuth2Session(credentials.id, credentials.secret, token_endpoint_auth_method=auth_method,
                                revocation_endpoint_auth_method=auth_method, default_timeout=10, **kwargs)
        session.trust_env = False  # a developer's HTTP_PROXY must not route requests to the loopback server
        return session

    @property
    def token_endpoint(self) -> str:
        return self.metadata["token_endpoint"]


@pytest.fixture
def server(world, monkeypatch) -> Server:
    # No relaxation of authlib's checks (see the module docstring): whatever the developer's shell
    # exports, these tests run without AUTHLIB_INSECURE_TRANSPORT.
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    issuer = f"http://127.0.0.1:{world.app.http_port}"
    answer = httpx.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text
    return Server(world, issuer, answer.json())


def register_gateway(world: World) -> Client:
    """A client of a partner whose only grant is introspect:read (the example policy's gateway role)."""
    add_partner(world, GATEWAY_PARTNER, roles=("gateway",))
    return add_client(world, GATEWAY_CLIENT, GATEWAY_PARTNER)


def check_get_user(world, access_token: str):
    return world.check("getUser", authorization=f"Bearer {access_token}", user_id="u-active")


def ext_authz_get_user(world, access_token: str):
    request = ext_authz_request("GET", "/v1/users/u-active", {"authorization": f"Bearer {access_token}"})
    return ext_authz_stub(world.channel).Check(request, timeout=10)


def assert_revoked_at_check(world, access_token: str) -> None:
    response = check_get_user(world, access_token)
    assert not response.allowed, response
    assert (response.reason, response.http_status) == ("token_revoked", 401)


def refused_grant(client: OAuth2Session, url: str, refresh_token: str) -> OAuthError:
    with pytest.raises(OAuthError) as refused:
        client.refresh_token(url, refresh_token=refresh_token)
    return refused.value


def test_metadata_passes_authlibs_rfc8414_checks(server):
    metadata = AuthorizationServerMetadata(server.metadata)
    assert metadata["issuer"] == server.issuer
    # Every field authlib validates, through authlib's own validators (https-or-loopback URLs,
    # endpoints, auth methods, grant types)...
    for key in metadata.REGISTRY_KEYS:
        if key != "response_types_supported":
            getattr(metadata, f"validate_{key}")()
    # ...except response_types_supported: authlib treats an empty list as missing, but Tollgate has
    # no authorization endpoint, so no response type is honestly supported; RFC 8414 asks for the
    # member, which is there.
    assert metadata["response_types_supported"] == []
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint", "jwks_uri"):
        assert metadata[name].startswith(server.issuer + "/") and is_secure_transport(metadata[name])
    assert set(AUTH_METHODS) <= set(metadata["token_endpoint_auth_methods_supported"])


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
def test_client_credentials_token_is_allowed_by_check_and_ext_authz(server, auth_method):
    world = server.world
    acme = add_client(world, ACME_CLIENT)
    sent: list[requests.PreparedRequest] = []
    with server.client(acme, auth_method, scope="user:read") as client:
        client.hooks["response"].append(lambda response, **_: sent.append(response.request))
        token = client.fetch_token(server.token_endpoint, grant_type="client_credentials")

    # The client authenticated the way it was told to, and the server accepted that way.
    (request,) = sent
    form = parse_qs(request.body if isinstance(request.body, str) else request.body.decode())
    if auth_method == "client_secret_basic":
        assert request.headers["authorization"].startswith("Basic ") and "client_secret" not in form
    else:
        assert "authorization" not in request.headers and form["client_secret"] == [acme.secret]
    assert token["token_type"] == "Bearer" and token["scope"] == "user:read" and token["expires_in"] > 0
    assert "refresh_token" not in token  # the client has refresh tokens off

    native = check_get_user(world, token["access_token"])
    assert native.allowed, native
    assert native.principal.partner_id == "acme"
    assert native.principal.credential_kind == common_pb2.CREDENTIAL_KIND_OAUTH_CLIENT
    assert native.principal.credential_id.startswith(f"{ACME_CLIENT}:")

    envoy = ext_authz_get_user(world, token["access_token"])
    assert envoy.HasField("ok_response"), envoy
    headers = {o.header.key: o.header.value for o in envoy.ok_response.headers}
    assert headers["x-tollgate-partner-id"] == "acme" and headers["x-tollgate-scopes"] == "user:read"
    assert headers["x-tollgate-credential-id"] == native.principal.credential_id

    # The token carries only the scope asked for: writing the user is beyond it.
    denied = world.check("updateUser", authorization=f"Bearer {token['access_token']}", user_id="u-active")
    assert (denied.allowed, denied.reason) == (False, "insufficient_scope")


def test_refresh_rotates_and_a_spent_refresh_token_is_invalid_grant(server):
    world = server.world
    acme = add_client(world, ACME_CLIENT, refresh_tokens=True)
    with server.client(acme) as client:
        first = dict(client.fetch_token(server.token_endpoint, grant_type="client_credentials"))
        second = dict(client.refresh_token(server.token_endpoint))  # the client's current refresh token
        third = dict(client.refresh_token(server.token_endpoint))
        refresh_tokens = [first["refresh_token"], second["refresh_token"], third["refresh_token"]]
        assert len(set(refresh_tokens)) == 3, "every refresh returns a new refresh token"
        assert second["access_token"] != first["access_token"] and third["scope"] == first["scope"]
        assert check_get_user(world, third["access_token"]).allowed

        spent = refused_grant(client, server.token_endpoint, first["refresh_token"])
        assert spent.error == "invalid_grant", spent
        # Reuse of a spent token revokes its family (RFC 9700 4.14.2): the newest refresh token
        # and the access tokens issued from the family go with it.
        assert refused_grant(client, server.token_endpoint, third["refresh_token"]).error == "invalid_grant"
    assert_revoked_at_check(world, third["access_token"])


def test_revoked_access_token_is_denied_by_check_at_the_next_call(server):
    world = server.world
    acme = add_client(world, ACME_CLIENT)
    with server.client(acme, "client_secret_post") as client:
        token = client.fetch_token(server.token_endpoint, grant_type="client_credentials")
        assert check_get_user(world, token["access_token"]).allowed
        answer = client.revoke_token(server.metadata["revocation_endpoint"], token=token["access_token"],
                                     token_type_hint="access_token")
    assert answer.status_code == 200, answer.text
    assert_revoked_at_check(world, token["access_token"])
    envoy = ext_authz_get_user(world, token["access_token"])
    assert envoy.denied_response.status.code == 401 and envoy.dynamic_metadata["reason"] == "token_revoked"


def test_revoked_refresh_token_is_refused_and_takes_its_access_tokens(server):
    world = server.world
    acme = add_client(world, ACME_CLIENT, refresh_tokens=True)
    with server.client(acme) as client:
        token = dict(client.fetch_token(server.token_endpoint, grant_type="client_credentials"))
        answer = client.revoke_token(server.metadata["revocation_endpoint"], token=token["refresh_token"],
                                     token_type_hint="refresh_token")
        assert answer.status_code == 200, answer.text
        assert refused_grant(client, server.token_endpoint, token["refresh_token"]).error == "invalid_grant"
    assert_revoked_at_check(world, token["access_token"])


def test_introspection_by_a_client_holding_the_introspect_grant(server):
    world = server.world
    acme, gateway = add_client(world, ACME_CLIENT, refresh_tokens=True), register_gateway(world)
    endpoint = server.metadata["introspection_endpoint"]
    with server.client(acme) as client:
        token = dict(client.fetch_token(server.token_endpoint, grant_type="client_credentials", scope="user:read"))
        # acme holds no introspect grant: RFC 6750 insufficient_scope.
        refused = client.introspect_token(endpoint, token=token["access_token"])
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"

    with server.client(gateway, "client_secret_post") as introspector:
        access = introspector.introspect_token(endpoint, token=token["access_token"], token_type_hint="access_token")
        assert access.status_code == 200, access.text
        assert access.headers["cache-control"] == "no-store"
        body = access.json()
        assert body["active"] is True and body["client_id"] == ACME_CLIENT and body["scope"] == "user:read"
        assert body["token_type"] == "Bearer" and body["iss"] == server.issuer and body["exp"] > 0
        refresh = introspector.introspect_token(endpoint, token=token["refresh_token"]).json()
        assert refresh["active"] is True and refresh["token_type"] == "refresh_token"

        with server.client(acme) as client:
            revoked = client.revoke_token(server.metadata["revocation_endpoint"], token=token["access_token"])
            assert revoked.status_code == 200, revoked.text
        assert introspector.introspect_token(endpoint, token=token["access_token"]).json() == {"active": False}
