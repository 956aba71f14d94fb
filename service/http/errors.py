"""The one error table of the HTTP transport: OAuth errors (RFC 6749 section 5.2) and the other
domain errors, as JSON responses with their HTTP status. Nothing a client sent is echoed: the
descriptions are our own fixed text."""

from __future__ import annotations

import json
import logging

from starlette.responses import Response

from ..domain import errors
from ..domain.oauth import OAuthError, OAuthErrorCode
from ..domain.text import quotable

log = logging.getLogger("tollgate.http")

# Every token-service answer may carry a token or a decision about one: never cached anywhere
# (RFC 6749 section 5.1, RFC 7662 section 2.2).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, not to be stored unless `headers` give a Cache-Control of their own."""
    headers = headers or {}
    merged = headers if "Cache-Control" in headers else {**NO_STORE, **headers}
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=merged)


def oauth_error_response(error: OAuthError, realm: str, *, bearer: bool = False) -> Response:
    """`bearer`: the caller authenticated (or failed to) with a bearer credential rather than
    client credentials, so a 401 challenges Bearer (RFC 6750) instead of Basic (RFC 6749 5.2)."""
    code = error.code
    headers: dict[str, str] = {}
    if code is OAuthErrorCode.INVALID_CLIENT:
        headers["WWW-Authenticate"] = f'Bearer realm="{realm}"' if bearer else f'Basic realm="{realm}"'
    if code is OAuthErrorCode.TEMPORARILY_UNAVAILABLE and error.retry_after:
        headers["Retry-After"] = str(error.retry_after)
    body = {"error": code.value, "error_description": quotable(error.message)}
    return json_response(body, code.http_status, headers)


def domain_error_response(error: errors.DomainError) -> Response:
    """What is not an OAuth error: a store outage (503, retry), a malformed value (400)."""
    if isinstance(error, errors.StoreUnavailable):
        log.warning("store unavailable: %r", error.__cause__)
        return json_response({"error": "temporarily_unavailable", "error_description": "the store is unavailable"},
                             503, {"Retry-After": "1"})
    if isinstance(error, errors.InvalidRequest):
        return json_response({"error": "invalid_request", "error_description": quotable(error.message)},
                             400)
    log.error("unexpected domain error %s: %s", type(error).__name__, error.reason)
    return server_error()


def server_error() -> Response:
    return json_response({"error": "server_error", "error_description": "internal error"}, 500)
