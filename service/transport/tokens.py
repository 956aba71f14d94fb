"""tollgate.v1.Tokens: the gRPC twin of the OAuth endpoints; translate, call the use case, translate back."""

from __future__ import annotations

from tollgate.v1 import tokens_pb2, tokens_pb2_grpc

from ..domain.credentials import parse_presented
from ..domain.errors import CredentialRejected
from ..domain.oauth import ClientCredentials, OAuthError, OAuthErrorCode, TokenRequest
from ..telemetry import Telemetry
from ..usecases.tokens import IntrospectionCaller, TokenService
from .errors import translate_errors
from .metadata import credential_headers, peer_address


class TokensServicer(tokens_pb2_grpc.TokensServicer):
    def __init__(self, tokens: TokenService, telemetry: Telemetry) -> None:
        self._tokens = tokens
        self._telemetry = telemetry

    @translate_errors
    def IssueToken(self, request: tokens_pb2.IssueTokenRequest, context) -> tokens_pb2.IssueTokenResponse:
        issued = self._tokens.issue(TokenRequest(
            grant_type=request.grant_type, client=_client(request),
            scope=request.scope if request.HasField("scope") else None, refresh_token=request.refresh_token),
            peer_address(context))
        return tokens_pb2.IssueTokenResponse(access_token=issued.access_token, token_type=issued.token_type,
                                             expires_in=issued.expires_in, scope=issued.scope,
                                             refresh_token=issued.refresh_token)

    @translate_errors
    def RevokeToken(self, request: tokens_pb2.TokensRevokeTokenRequest,
                    context) -> tokens_pb2.TokensRevokeTokenResponse:
        self._tokens.revoke(_client(request), request.token, peer_address(context))
        return tokens_pb2.TokensRevokeTokenResponse()

    @translate_errors
    def IntrospectToken(self, request: tokens_pb2.IntrospectTokenRequest,
                        context) -> tokens_pb2.IntrospectTokenResponse:
        found = self._tokens.introspect(_introspection_caller(request, context), request.token, peer_address(context))
        return tokens_pb2.IntrospectTokenResponse(
            active=found.active, scope=found.scope, client_id=found.client_id, sub=found.sub, exp=found.exp,
            iat=found.iat, token_type=found.token_type, iss=found.iss, aud=found.aud, jti=found.jti)


def _client(request) -> ClientCredentials | None:
    if not request.HasField("client"):
        return None
    return ClientCredentials(request.client.client_id, request.client.client_secret)


def _introspection_caller(request: tokens_pb2.IntrospectTokenRequest, context) -> IntrospectionCaller:
    client = _client(request)
    if client is not None:
        return IntrospectionCaller(client=client)
    try:
        return IntrospectionCaller(bearer=parse_presented(*credential_headers(context)))
    except CredentialRejected:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the caller's credential is malformed") from None
