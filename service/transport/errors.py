"""The one error table: typed domain errors -> gRPC status codes with a google.rpc.ErrorInfo.

Anything not in the table becomes INTERNAL with a generic message; the details go to the log only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..domain import errors
from ..domain.oauth import OAuthError, OAuthErrorCode

log = logging.getLogger("tollgate.transport")

ERROR_DOMAIN = "tollgate.dev"

_TABLE: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.NotPermitted, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    # The issuer's keys could not be fetched: the state of a remote server, not of the request.
    (errors.KeyFetchFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Conflict, grpc.StatusCode.ABORTED),
    (errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


# OAuth errors of tollgate.v1.Tokens, by RFC 6749 error code (the code is the ErrorInfo reason).
_OAUTH_TABLE: dict[OAuthErrorCode, grpc.StatusCode] = {
    OAuthErrorCode.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    OAuthErrorCode.INVALID_CLIENT: grpc.StatusCode.UNAUTHENTICATED,
    OAuthErrorCode.INVALID_GRANT: grpc.StatusCode.FAILED_PRECONDITION,
    OAuthErrorCode.UNAUTHORIZED_CLIENT: grpc.StatusCode.PERMISSION_DENIED,
    OAuthErrorCode.UNSUPPORTED_GRANT_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    OAuthErrorCode.INVALID_SCOPE: grpc.StatusCode.INVALID_ARGUMENT,
    OAuthErrorCode.UNSUPPORTED_TOKEN_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    OAuthErrorCode.INSUFFICIENT_SCOPE: grpc.StatusCode.PERMISSION_DENIED,
    OAuthErrorCode.TEMPORARILY_UNAVAILABLE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    if isinstance(error, OAuthError):
        return _OAUTH_TABLE[error.code]
    for error_type, code in _TABLE:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, reason: str, field: str = "",
                retry_after: int = 0) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    if field:
        info.metadata["field"] = field
    if retry_after:
        info.metadata["retry_after_seconds"] = str(retry_after)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    return rpc_status.to_status(status)


Handler = TypeVar("Handler", bound=Callable)


def deadline_passed(context: grpc.ServicerContext) -> bool:
    """True when the client set a deadline and it has already passed."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def translate_errors(handler: Handler) -> Handler:
    """Wraps a servicer method: domain errors abort with their code, anything else with INTERNAL."""

    @functools.wraps(handler)
    def wrapper(self, request, context: grpc.ServicerContext):
        if deadline_passed(context):
            # The caller has given up (it waited in the queue, e.g. behind calls stuck on the
            # store): starting store work for it would only hold a worker and a connection longer.
            context.abort_with_status(rich_status(grpc.StatusCode.DEADLINE_EXCEEDED,
                                                  "the deadline passed before the call started", "deadline_exceeded"))
        try:
            return handler(self, request, context)
        except errors.DomainError as error:
            code = status_code_for(error)
            if code is grpc.StatusCode.UNAVAILABLE:
                log.warning("store unavailable in %s: %r", handler.__qualname__, error.__cause__)
                telemetry = getattr(self, "_telemetry", None)  # every servicer of ours carries one
                if telemetry is not None:
                    telemetry.record_store_error(handler.__name__)
            context.abort_with_status(rich_status(code, error.message, error.reason, error.field,
                                                  getattr(error, "retry_after", 0)))
        except Exception:  # the last line of defence: never leak a stack trace
            log.exception("unexpected error in %s", handler.__qualname__)
            context.abort_with_status(rich_status(grpc.StatusCode.INTERNAL, "internal error", "internal"))

    return wrapper  # type: ignore[return-value]  # functools.wraps: the same signature as `handler`
