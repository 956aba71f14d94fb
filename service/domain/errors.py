"""Typed domain errors. Only service/transport maps them to wire codes (one table, one place).

Each error carries a stable snake_case `reason` (sent as google.rpc.ErrorInfo.reason), a human
message and, where one request field is at fault, its name.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core and the store raise on purpose."""

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field


class InvalidRequest(DomainError):
    """The call is malformed: a missing or ill-formed field (INVALID_ARGUMENT)."""

    default_reason = "invalid_argument"


class Unauthenticated(DomainError):
    """The caller of an administrative RPC presented no valid credential (UNAUTHENTICATED)."""

    default_reason = "unauthenticated"


class NotPermitted(DomainError):
    """The caller is known but may not do this (PERMISSION_DENIED)."""

    default_reason = "permission_denied"


class NotFound(DomainError):
    """The thing named does not exist, or is not visible to the caller (NOT_FOUND)."""

    default_reason = "not_found"


class PreconditionFailed(DomainError):
    """The thing exists but is in a state that forbids the action (FAILED_PRECONDITION)."""

    default_reason = "failed_precondition"


class Conflict(DomainError):
    """A concurrent change won a race, or a unique thing already exists (ABORTED / ALREADY_EXISTS)."""

    default_reason = "conflict"


class StoreUnavailable(DomainError):
    """The store cannot be reached or timed out; decisions fail closed (UNAVAILABLE)."""

    default_reason = "store_unavailable"


class CredentialRejected(DomainError):
    """A presented credential failed verification. Not an RPC error: Check turns it into a deny.

    `reason` is one of Reason.INVALID_TOKEN, TOKEN_EXPIRED, TOKEN_REVOKED (as its string value).
    """

    default_reason = "invalid_token"


class PolicyError(DomainError):
    """The policy document is broken; `field` holds the key path (and line, when known)."""

    default_reason = "invalid_policy"


class KeyFetchFailed(DomainError):
    """An issuer's discovery document or JWK Set could not be fetched or was refused.

    `outcome` is a short label for metrics ("http_error", "timeout", "too_large", "invalid_keys"…);
    the message says what went wrong for operators and never quotes the body received.
    """

    default_reason = "key_fetch_failed"

    def __init__(self, message: str, *, outcome: str, field: str = "") -> None:
        super().__init__(message, field=field)
        self.outcome = outcome
