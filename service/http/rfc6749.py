"""The token endpoint, POST /oauth/token (RFC 6749 sections 4.4, 5 and 6): client credentials and
refresh token grants. Parameters per params.py; the grant itself is the token use case's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain.oauth import IssuedToken, TokenRequest
from .errors import json_response
from .params import read_parameters
from .service import Endpoint


class TokenEndpoint(Endpoint):
    name = "token"

    async def answer(self, request: Request) -> Response:
        params = await read_parameters(request)
        token_request = TokenRequest(grant_type=params.get("grant_type") or "", client=params.client(),
                                     scope=params.get("scope"), refresh_token=params.get("refresh_token") or "")
        address = client_address(request)
        # A grant whose facts are all in memory is answered here, without the hand-off to a thread
        # (a good share of a grant's cost); one that would read or write the store goes to a thread.
        issued = self.tokens.issue_from_memory(token_request, address)
        if issued is None:
            issued = await self.run(self.tokens.issue, token_request, address)
        return json_response(token_response(issued))


def token_response(issued: IssuedToken) -> dict[str, object]:
    """RFC 6749 section 5.1 (the scope is always returned: it may differ from the request)."""
    body: dict[str, object] = {"access_token": issued.access_token, "token_type": issued.token_type,
                               "expires_in": issued.expires_in, "scope": issued.scope}
    if issued.refresh_token:
        body["refresh_token"] = issued.refresh_token
    return body


def client_address(request: Request) -> str:
    """The peer's address: what failed client authentications are counted against."""
    return request.client.host if request.client is not None else ""
