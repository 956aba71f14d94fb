"""What the client presented, parsed from the Authorization / X-API-Key header values."""

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


def parse_presented(authorization: str, api_key: str) -> PresentedCredential | None:
    """None when nothing was sent. Raises CredentialRejected(invalid_token) for a malformed header.

    `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 section 2.1) takes
    precedence over `X-API-Key: <key>`. A bearer value with the API-key prefix is an API key;
    anything else is treated as a JWT.
    """
    authorization = authorization.strip()
    api_key = api_key.strip()
    if not authorization and not api_key:
        return None
    if len(authorization) > MAX_CREDENTIAL_LENGTH or len(api_key) > MAX_CREDENTIAL_LENGTH:
        raise CredentialRejected("the credential is too long", reason="invalid_token")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise CredentialRejected("the Authorization header must be 'Bearer <token>'", reason="invalid_token")
    else:
        token = api_key
    kind = PresentedKind.API_KEY if token.startswith(API_KEY_PREFIX) or not authorization else PresentedKind.JWT
    return PresentedCredential(kind=kind, value=token)
