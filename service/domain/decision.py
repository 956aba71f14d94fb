"""Decisions as data: the reason codes, their HTTP statuses, and the bodies a gateway returns."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .model import Principal
from .scopes import Permission
from .text import quotable


class Reason(enum.StrEnum):
    """Stable deny reasons, in the order Check evaluates them (the first failure decides)."""

    # 403: the operation is not in the policy and no explicit permissions were given.
    UNKNOWN_OPERATION = "unknown_operation"
    # 401: the operation is not public and no credential was sent.
    MISSING_TOKEN = "missing_token"
    # 401: malformed, unknown key/issuer, bad signature, wrong iss/aud/typ, algorithm not allowed.
    INVALID_TOKEN = "invalid_token"
    # 401: past exp (beyond the leeway), before nbf, or an expired API key.
    TOKEN_EXPIRED = "token_expired"
    # 401: the key or the JWT's jti was revoked, or the partner is suspended.
    TOKEN_REVOKED = "token_revoked"
    # 403: a required permission is not among the effective grants; the message names it.
    INSUFFICIENT_SCOPE = "insufficient_scope"
    # 403: the operation needs an active partner-user relation and there is none.
    USER_ACCESS_DENIED = "user_access_denied"
    # 403: the operation needs an active partner-organization relation and there is none.
    ORGANIZATION_ACCESS_DENIED = "organization_access_denied"
    # 403, field customerId: the customer number is not among the credential's customer numbers.
    CUSTOMER_ACCESS_DENIED = "customer_access_denied"
    # 429: the partner spent its rate of checks (decided right after the credential is proven).
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"

    @property
    def http_status(self) -> int:
        if self is Reason.RATE_LIMIT_EXCEEDED:
            return 429
        return 401 if self in _UNAUTHENTICATED else 403

    @property
    def is_token_error(self) -> bool:
        return self in _UNAUTHENTICATED


_UNAUTHENTICATED = frozenset(
    {Reason.MISSING_TOKEN, Reason.INVALID_TOKEN, Reason.TOKEN_EXPIRED, Reason.TOKEN_REVOKED}
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason | None = None
    message: str = ""
    # The request field at fault, named as the partner API names it (e.g. "customerId").
    field: str = ""
    # Who the decision is about: on an allow with a credential, and on every deny made after the
    # credential was proven (insufficient_scope, the access denials, the partner's rate limit).
    # None when no credential was recognised. Part of the value: decisions about two partners are
    # never equal, so nothing keyed by a Decision (response templates) can mix them.
    principal: Principal | None = None
    # On an allow with a credential: the effective grants.
    grants: tuple[Permission, ...] = ()
    # For insufficient_scope: the missing permissions, space-separated ("user:read").
    missing_scope: str = ""
    # For rate_limit_exceeded: seconds until a retry can succeed (the Retry-After value).
    retry_after: int = 0

    def __hash__(self) -> int:
        # Computed once: a Decision keys the response templates on every Check (hashing its
        # principal and grants anew would cost a recalled check a third of its time). The value
        # is frozen, so its hash cannot change; kept beside the fields, not as one.
        found: int | None = self.__dict__.get("_hash")
        if found is None:
            # Of strings and numbers only, each hashed in C: hashing the principal and the grants
            # themselves would run their generated __hash__ (a Python frame each, on every decided
            # check). Equal decisions have equal parts, so they still hash alike.
            principal = self.principal
            found = hash((self.allowed, self.reason, self.message, self.field,
                          None if principal is None else principal.partner_id,
                          None if principal is None else principal.credential_id,
                          len(self.grants), self.missing_scope, self.retry_after))
            object.__setattr__(self, "_hash", found)
        return found

    @property
    def http_status(self) -> int:
        return 200 if self.allowed else self.reason.http_status  # type: ignore[union-attr]  # a deny has a reason


ALLOW_PUBLIC = Decision(allowed=True, message="public operation")


def deny(reason: Reason, message: str, *, field: str = "", missing_scope: str = "", retry_after: int = 0,
         principal: Principal | None = None) -> Decision:
    """`principal`: who was refused, whenever the credential was proven before the deny (as on an
    allow); None when no credential was recognised (missing, invalid, expired, revoked)."""
    return Decision(allowed=False, reason=reason, message=message, field=field, principal=principal,
                    missing_scope=missing_scope, retry_after=retry_after)


def error_body(decision: Decision) -> str:
    """The JSON body a gateway can return as is: OAuth style (RFC 6750) for token and scope
    errors, the partner API's {"code", "errors": [...]} style for access errors."""
    if decision.allowed:
        return ""
    reason = decision.reason
    assert reason is not None
    if reason.is_token_error or reason is Reason.INSUFFICIENT_SCOPE:
        body: dict[str, object] = {"error": _oauth_error(reason), "error_description": decision.message}
        if decision.missing_scope:
            body["scope"] = decision.missing_scope
        if reason is not Reason.INSUFFICIENT_SCOPE:
            body["reason"] = reason.value
        return json.dumps(body, separators=(",", ":"))
    error: dict[str, str] = {"reason": reason.value, "message": decision.message}
    if decision.field:
        error["field"] = decision.field
    return json.dumps({"code": reason.http_status, "errors": [error]}, separators=(",", ":"))


def www_authenticate(decision: Decision, realm: str) -> str:
    """RFC 6750 section 3: on 401 and on insufficient_scope 403; no error attributes when no
    credential was sent. Attribute values are restricted to the characters the RFC allows."""
    reason = decision.reason
    if decision.allowed or reason is None:
        return ""
    if reason is Reason.MISSING_TOKEN:
        return f'Bearer realm="{quotable(realm)}"'
    if not (reason.is_token_error or reason is Reason.INSUFFICIENT_SCOPE):
        return ""
    parts = [
        f'realm="{quotable(realm)}"',
        f'error="{_oauth_error(reason)}"',
        f'error_description="{quotable(decision.message)}"',
    ]
    if decision.missing_scope:
        parts.append(f'scope="{quotable(decision.missing_scope)}"')
    return "Bearer " + ", ".join(parts)


def _oauth_error(reason: Reason) -> str:
    if reason is Reason.INSUFFICIENT_SCOPE:
        return "insufficient_scope"
    if reason is Reason.MISSING_TOKEN:
        return "invalid_request"
    return "invalid_token"

