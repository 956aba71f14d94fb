"""The revocation endpoint, POST /oauth/revoke (RFC 7009): the client that owns a refresh token
(whole family) or an access token (its jti) revokes it; an unknown token is answered 200."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .errors import json_response
from .params import read_parameters
from .rfc6749 import client_address
from .service import Endpoint


class RevocationEndpoint(Endpoint):
    name = "revoke"

    async def answer(self, request: Request) -> Response:
        params = await read_parameters(request)
        # token_type_hint is only a hint (RFC 7009 2.1): the token's own form says what it is.
        await self.run(self.tokens.revoke, params.client(), params.get("token") or "", client_address(request))
        return json_response({})
