"""OAuth 2 as data: the protocol errors with their HTTP statuses, token requests and responses,
and the scope rules of Tollgate's token service. Pure: no HTTP, no store, no signing.

RFC 6749 section 5.2 errors are values (`OAuthError.code`), mapped to an HTTP status here once
(`OAuthErrorCode.http_status`) and to gRPC codes once in service/transport/errors.py.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

from .errors import DomainError
from .policy import Policy
from .scopes import ADMIN_GRANT, AccessLevel, GrantSet
from .text import excerpt

# RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
MAX_SCOPES = 64
# The algorithms Tollgate can sign its own tokens with (TOLLGATE_TOKEN_SIGNING_ALGORITHM).
SIGNING_ALGORITHMS = ("ES256", "RS256", "EdDSA")
# The private claim of an access token naming the refresh token family it was issued from: Check
# refuses the token once that family is revoked.
FAMILY_CLAIM = "rt_family"


class GrantType(enum.StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"


class OAuthErrorCode(enum.StrEnum):
    """The error codes Tollgate's token service answers with, each documented with its status."""

    # 400: a parameter is missing, repeated or malformed, or the body is not a form or JSON.
    INVALID_REQUEST = "invalid_request"
    # 401 (WWW-Authenticate: Basic): the client is unknown or revoked, its secret is wrong, or it
    # sent no credentials.
    INVALID_CLIENT = "invalid_client"
    # 400: the refresh token is unknown, spent, expired, revoked or another client's.
    INVALID_GRANT = "invalid_grant"
    # 400: the client may not use this grant (refresh_token, for a client without refresh tokens).
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    # 400: a grant other than client_credentials and refresh_token (the password grant included).
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    # 400: a requested scope is unknown or beyond the client's grants, or wider than the refresh
    # token's.
    INVALID_SCOPE = "invalid_scope"
    # 400 (RFC 7009): revocation of a kind of token this server does not revoke (API keys).
    UNSUPPORTED_TOKEN_TYPE = "unsupported_token_type"
    # 403 (RFC 6750): the caller of introspection holds no introspect grant.
    INSUFFICIENT_SCOPE = "insufficient_scope"
    # 429 (Retry-After): too many failed client authentications from this client id or address.
    TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"

    @property
    def http_status(self) -> int:
        return _STATUS.get(self, 400)


_STATUS = {
    OAuthErrorCode.INVALID_CLIENT: 401,
    OAuthErrorCode.INSUFFICIENT_SCOPE: 403,
    OAuthErrorCode.TEMPORARILY_UNAVAILABLE: 429,
}


class OAuthError(DomainError):
    """A refusal of the token service, answered as RFC 6749 section 5.2 says. `retry_after`:
    seconds, for temporarily_unavailable."""

    def __init__(self, code: OAuthErrorCode, description: str, *, retry_after: int = 0) -> None:
        super().__init__(description, reason=code.value)
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presented to authenticate (RFC 6749 section 2.3.1)."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenRequest:
    """A token request after its transport has parsed it. `scope` None: no scope parameter."""

    grant_type: str
    client: ClientCredentials | None
    scope: str | None = None
    refresh_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class IssuedToken:
    """A successful token response (RFC 6749 section 5.1)."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    refresh_token: str = field(default="", repr=False)
    token_type: str = "Bearer"


@dataclass(frozen=True)
class Introspection:
    """An RFC 7662 answer; only `active` when the token is not active."""

    active: bool
    scope: str = ""
    client_id: str = ""
    sub: str = ""
    exp: int = 0
    iat: int = 0
    token_type: str = ""
    iss: str = ""
    aud: str = ""
    jti: str = ""


INACTIVE = Introspection(active=False)


@dataclass(frozen=True)
class OwnAccessToken:
    """An access token Tollgate issued, as far as its signature vouches: for revocation."""

    client_id: str
    jti: str
    expires_at: datetime


def is_scope_token(text: str) -> bool:
    return bool(_SCOPE_TOKEN.fullmatch(text))


def requested_scopes(text: str | None) -> tuple[str, ...] | None:
    """The scope parameter as distinct scope tokens in order; None when it was not sent.
    Raises OAuthError(invalid_scope) for a value RFC 6749 section 3.3 does not allow."""
    if text is None:
        return None
    tokens = text.split(" ")
    if not text or not all(map(is_scope_token, tokens)):
        raise OAuthError(OAuthErrorCode.INVALID_SCOPE, "scope must be scope tokens separated by single spaces")
    if len(tokens) > MAX_SCOPES:
        raise OAuthError(OAuthErrorCode.INVALID_SCOPE, f"at most {MAX_SCOPES} scopes")
    return tuple(dict.fromkeys(tokens))


def granted_scopes(policy: Policy, requested: tuple[str, ...], ceiling: GrantSet) -> tuple[str, ...]:
    """`requested` as given, when each names a grant (scope:level, level:scope, an alias, or
    admin) within `ceiling`; raises OAuthError(invalid_scope) naming the first that is not. An
    unknown one is named by its position only: it is the caller's text (a misplaced secret, say),
    and nothing a client sent is echoed."""
    for position, scope in enumerate(requested, start=1):
        try:
            wanted = policy.grants_from([scope], (), strict=True)
        except ValueError:
            raise OAuthError(OAuthErrorCode.INVALID_SCOPE, f"requested scope {position} is unknown") from None
        if not wanted.is_within(ceiling):
            raise OAuthError(OAuthErrorCode.INVALID_SCOPE, f"the client may not have the scope {excerpt(scope)}")
    return requested


def ceiling_scopes(policy: Policy, ceiling: GrantSet) -> tuple[str, ...]:
    """The scopes a token gets when none are requested: everything within `ceiling`, canonical."""
    if ceiling.every_scope >= AccessLevel.WRITE:
        return (ADMIN_GRANT,)
    return tuple(str(permission) for permission in ceiling.listed(policy.scope_names))


def narrowed_scopes(policy: Policy, requested: tuple[str, ...] | None, original: tuple[str, ...]) -> tuple[str, ...]:
    """A refresh's scope: the original when none is requested, else `requested` when it is no
    wider than the original (RFC 6749 section 6); OAuthError(invalid_scope) otherwise."""
    if requested is None:
        return original
    return granted_scopes(policy, requested, policy.grants_from(original, (), strict=False))


def scopes_supported(policy: Policy) -> list[str]:
    """What the RFC 8414 metadata advertises: each declared scope at read and write, and admin."""
    names = sorted(policy.scope_names)
    return [f"{name}:{level}" for name in names for level in ("read", "write")] + [ADMIN_GRANT]

