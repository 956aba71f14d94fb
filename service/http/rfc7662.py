"""The introspection endpoint, POST /oauth/introspect (RFC 7662), for gateways that cannot call
Check: is this token active, and for whom. The caller authenticates as an OAuth client (Basic or
body) or with a bearer credential, and must hold the introspect grant."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain.oauth import Introspection, OAuthError, OAuthErrorCode
from ..usecases.tokens import IntrospectionCaller
from .errors import json_response, oauth_error_response
from .params import OAuthParameters, read_parameters
from .rfc6749 import client_address
from .service import Endpoint


class IntrospectionEndpoint(Endpoint):
    name = "introspect"

    async def answer(self, request: Request) -> Response:
        params: OAuthParameters | None = None
        try:
            params = await read_parameters(request)
            client = params.client()
            caller = IntrospectionCaller(client=client, bearer=None if client is not None else params.bearer)
            found = await self.run(self.tokens.introspect, caller, params.get("token") or "",
                                   client_address(request))
        except OAuthError as error:
            if error.code is OAuthErrorCode.INVALID_CLIENT and not _tried_client_credentials(request, params):
                return oauth_error_response(error, self.realm, bearer=True)
            raise
        return json_response(introspection_response(found))


def _tried_client_credentials(request: Request, params: OAuthParameters | None) -> bool:
    """Whether the caller authenticated (or tried to) as an OAuth client; if not, a 401 challenges
    it for a bearer credential (RFC 6750) rather than for Basic."""
    if request.headers.get("authorization", "").lstrip().lower().startswith("basic"):
        return True
    return params is not None and params.get("client_id") is not None


def introspection_response(found: Introspection) -> dict[str, object]:
    """RFC 7662 section 2.2: an inactive token is {"active": false} and nothing more."""
    if not found.active:
        return {"active": False}
    body: dict[str, object] = {"active": True, "scope": found.scope, "client_id": found.client_id, "sub": found.sub,
                               "token_type": found.token_type}
    for name in ("exp", "iat"):
        if getattr(found, name):
            body[name] = getattr(found, name)
    for name in ("iss", "aud", "jti"):
        if getattr(found, name):
            body[name] = getattr(found, name)
    return body
