"""Discovery: GET /.well-known/oauth-authorization-server (RFC 8414) and the public keys of
Tollgate's signing keys at GET /.well-known/jwks.json (RFC 7517), so that other services can
verify Tollgate's tokens without calling it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain.oauth import scopes_supported
from .errors import json_response
from .service import Endpoint

TOKEN_PATH = "/oauth/token"
REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Verifiers may keep the key set this long; a rotated-in key is also found by refetching on an
# unknown kid, and a retired key stays published until its last token has expired.
JWKS_MAX_AGE_SECONDS = 60


class MetadataEndpoint(Endpoint):
    name = "metadata"

    async def answer(self, request: Request) -> Response:
        issuer = self.tokens.settings.issuer
        return json_response({
            "issuer": issuer,
            "token_endpoint": issuer + TOKEN_PATH,
            "revocation_endpoint": issuer + REVOCATION_PATH,
            "introspection_endpoint": issuer + INTROSPECTION_PATH,
            "jwks_uri": issuer + JWKS_PATH,
            "grant_types_supported": ["client_credentials", "refresh_token"],
            # There is no authorization endpoint: no response type is offered.
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "scopes_supported": scopes_supported(self.policy()),
        }, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"})


class JwksEndpoint(Endpoint):
    name = "jwks"

    async def answer(self, request: Request) -> Response:
        keys = await self.run(self.tokens.published_keys)
        return json_response({"keys": keys}, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"})
