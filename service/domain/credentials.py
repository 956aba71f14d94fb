"""What the client presented, parsed from the Authorization / X-API-Key header values (and, through
ext_authz where the policy turns it on, an API key in a query parameter)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import CredentialRejected
from .opaque import API_KEY_PREFIX

# Headers beyond this are refused before any parsing; real tokens are far smaller.
MAX_CREDENTIAL_LENGTH = 16 * 1024


class PresentedKind(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"


@dataclass(frozen=True)
class PresentedCredential:
    kind: PresentedKind
    value: str

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"PresentedCredential(kind={self.kind.value}, value=<redacted>)"


@dataclass(frozen=True)
class QueryApiKey:
    """An API key sent as a query parameter (ext_authz, on routes where the policy names one): the
    parameter's name and every value the request gave it, percent-decoded."""

    parameter: str
    values: tuple[str, ...]

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"QueryApiKey(parameter={self.parameter!r}, values=<{len(self.values)} redacted>)"


def parse_presented(authorization: str, api_key: str, query: QueryApiKey | None = None) -> PresentedCredential | None:
    """None when nothing was sent. Raises CredentialRejected(invalid_token) for a malformed header.

    `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 section 2.1) takes
    precedence over `X-API-Key: <key>`, which takes precedence over an API key in a query
    parameter (`query`, looked at only when neither header carries anything). A bearer value with
    the API-key prefix is an API key; anything else is treated as a JWT.

    An Authorization header in another scheme (`Basic …`, or a bare word: any RFC 7235 auth-scheme
    but Bearer) carries no bearer credentials (RFC 6750 section 3.1): it counts as absent, so the
    request is judged by its X-API-Key, else as one without a credential (missing_token). A
    header that is no `scheme [credentials]` at all, or a Bearer one without exactly one token,
    is malformed (invalid_token).
    """
    authorization = authorization.strip()
    api_key = api_key.strip()
    if not authorization and not api_key:
        return _from_query(query) if query is not None else None
    if len(authorization) > MAX_CREDENTIAL_LENGTH or len(api_key) > MAX_CREDENTIAL_LENGTH:
        raise CredentialRejected("the credential is too long", reason="invalid_token")
    token = _bearer_token(authorization) if authorization else None
    if token is None:
        if not api_key:
            return _from_query(query) if query is not None else None
        token = api_key
        authorization = ""
    kind = PresentedKind.API_KEY if token.startswith(API_KEY_PREFIX) or not authorization else PresentedKind.JWT
    return PresentedCredential(kind=kind, value=token)


# RFC 7230 section 3.2.6 tchar: the characters of a token, such as an auth-scheme (RFC 7235).
_TOKEN_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _bearer_token(authorization: str) -> str | None:
    """The token of a Bearer Authorization value; None for another scheme (no bearer credentials);
    CredentialRejected(invalid_token) for a malformed value."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer":
        token = token.strip()
        if not token or " " in token:
            raise CredentialRejected("the Authorization header must be 'Bearer <token>'", reason="invalid_token")
        return token
    if scheme and _TOKEN_CHARACTERS.issuperset(scheme):
        return None
    raise CredentialRejected("the Authorization header must be 'Bearer <token>'", reason="invalid_token")


def _from_query(query: QueryApiKey) -> PresentedCredential | None:
    """The query parameter's value is an API key, judged as an X-API-Key value would be (but not
    trimmed: a URL has no optional white space). Repeated, it is refused rather than guessed at;
    empty, it is no credential (as an empty header)."""
    if len(query.values) > 1:
        raise CredentialRejected(f"the {query.parameter} query parameter is repeated; send one API key",
                                 reason="invalid_token")
    value = query.values[0] if query.values else ""
    if not value:
        return None
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise CredentialRejected("the credential is too long", reason="invalid_token")
    if not value.startswith(API_KEY_PREFIX):
        raise CredentialRejected(f"the {query.parameter} query parameter must carry an API key", reason="invalid_token")
    return PresentedCredential(kind=PresentedKind.API_KEY, value=value)
