"""Pure conversions between protobuf messages and domain values (tested on their own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from tollgate.v1 import authorization_pb2, common_pb2, relations_pb2

from ..check.query import CheckItem, CheckQuery
from ..domain.decide import Resource
from ..domain.decision import Decision, Reason, error_body, www_authenticate
from ..domain.errors import InvalidRequest
from ..domain.explain import Step, StepOutcome
from ..domain.model import (
    CredentialKind,
    RelationEventRecord,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from ..domain.scopes import AccessLevel

_DENY_REASONS = {reason: getattr(authorization_pb2, f"DENY_REASON_{reason.name}") for reason in Reason}
_LEVELS = {
    AccessLevel.NONE: common_pb2.ACCESS_LEVEL_NONE,
    AccessLevel.READ: common_pb2.ACCESS_LEVEL_READ,
    AccessLevel.WRITE: common_pb2.ACCESS_LEVEL_WRITE,
}
_KINDS = {CredentialKind.API_KEY: common_pb2.CREDENTIAL_KIND_API_KEY,
          CredentialKind.JWT: common_pb2.CREDENTIAL_KIND_JWT,
          CredentialKind.OAUTH_CLIENT: common_pb2.CREDENTIAL_KIND_OAUTH_CLIENT}
_SUBJECTS = {SubjectType.USER: relations_pb2.SUBJECT_TYPE_USER,
             SubjectType.ORGANIZATION: relations_pb2.SUBJECT_TYPE_ORGANIZATION}
_SUBJECTS_BACK = {v: k for k, v in _SUBJECTS.items()}
_STATUSES = {status: getattr(relations_pb2, f"RELATION_STATUS_{status.name}") for status in RelationStatus}
_STATUSES_BACK = {v: k for k, v in _STATUSES.items()}


_NO_RESOURCE = Resource()


def check_query_from_proto(request: authorization_pb2.CheckRequest, client_address: str) -> CheckQuery:
    """`client_address`: where the credential comes from (the request's own, else the peer's)."""
    # Positional, and no sub-message wrapper nor Resource built when none was sent: this runs on
    # every Check, and keyword arguments and the wrappers cost several µs of it.
    if request.HasField("resource"):
        resource = request.resource
        checked = Resource(resource.user_id, resource.organization_id, resource.customer_id)
    else:
        checked = _NO_RESOURCE
    permissions = request.permissions
    return CheckQuery(request.authorization, request.api_key, request.operation,
                      list(permissions) if permissions else [], checked,
                      revision_from_token(request.at_least_as_fresh), client_address, None, request.explain)


def check_items_from_proto(request: authorization_pb2.BatchCheckRequest) -> list[CheckItem]:
    return [CheckItem(item.operation, list(item.permissions),
                      Resource(item.resource.user_id, item.resource.organization_id, item.resource.customer_id))
            for item in request.items]


def revision_token(revision: int) -> str:
    return str(revision)


def revision_from_token(token: str) -> int:
    """"" -> 0 (no requirement); a token we issued -> its revision; anything else INVALID_ARGUMENT."""
    if not token:
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 18:
        raise InvalidRequest("at_least_as_fresh is not a revision token from ManageRelation",
                             field="at_least_as_fresh")
    return int(token)


_STEP_OUTCOMES = {outcome: getattr(authorization_pb2, f"STEP_OUTCOME_{outcome.name}") for outcome in StepOutcome}


def check_response_to_proto(decision: Decision, *, realm: str, decision_id: str) -> authorization_pb2.CheckResponse:
    response = check_response_template(decision, realm)
    response.decision_id = decision_id
    return response


def explained_check_response(decision: Decision, steps: tuple[Step, ...], *, realm: str,
                             decision_id: str) -> authorization_pb2.CheckResponse:
    response = check_response_to_proto(decision, realm=realm, decision_id=decision_id)
    add_explanation(response, steps)
    return response


def add_explanation(response: authorization_pb2.CheckResponse, steps: tuple[Step, ...]) -> None:
    for step in steps:
        response.explanation.add(name=step.name, outcome=_STEP_OUTCOMES[step.outcome], facts=dict(step.facts))


def check_response_template(decision: Decision, realm: str) -> authorization_pb2.CheckResponse:
    """The response to `decision`, all but its decision id (the same for every check that reaches it)."""
    response = authorization_pb2.CheckResponse(
        allowed=decision.allowed,
        http_status=decision.http_status,
        message=decision.message,
        field=decision.field,
    )
    if decision.reason is not None:
        response.reason = decision.reason.value
        response.deny_reason = _DENY_REASONS[decision.reason]
        response.body = error_body(decision)
        response.www_authenticate = www_authenticate(decision, realm)
        response.retry_after_seconds = decision.retry_after
    if decision.principal is not None:
        principal = decision.principal
        response.principal.partner_id = principal.partner_id
        response.principal.credential_id = principal.credential_id
        response.principal.credential_kind = _KINDS[principal.kind]
        response.grants.extend(common_pb2.Grant(scope=g.scope, level=_LEVELS[g.level]) for g in decision.grants)
    return response


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


MAX_DURATION_SECONDS = 10 ** 12  # ~31,700 years: far past any limit, well inside timedelta


def duration_or_none(message, field: str, path: str) -> timedelta | None:
    """A Duration field that was set, as a timedelta; unset -> None (presence matters here)."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidRequest(f"{path} must be positive", field=path)
    # Beyond what timedelta holds reads as the longest duration: the use case refuses it as too
    # long, after its own checks of who may act (so the caller learns nothing sooner).
    return value.ToTimedelta() if value.seconds < MAX_DURATION_SECONDS else timedelta.max


def relation_to_proto(relation: RelationRecord) -> relations_pb2.Relation:
    return relations_pb2.Relation(
        id=relation.id,
        partner_id=relation.partner_id,
        subject_type=_SUBJECTS[relation.subject_type],
        subject_id=relation.subject_id,
        status=_STATUSES[relation.status],
        create_time=timestamp(relation.created_at),
        update_time=timestamp(relation.updated_at),
        expire_time=timestamp(relation.expires_at),
    )


def event_to_proto(event: RelationEventRecord) -> relations_pb2.RelationEvent:
    return relations_pb2.RelationEvent(
        id=event.id,
        relation_id=event.relation_id,
        actor=event.actor,
        time=timestamp(event.at),
        from_status=_STATUSES[event.from_status] if event.from_status else relations_pb2.RELATION_STATUS_UNSPECIFIED,
        to_status=_STATUSES[event.to_status],
        reason=event.reason,
    )


def relation_filter_from_proto(request: relations_pb2.ListRelationsRequest) -> RelationFilter:
    if request.subject_type and request.subject_type not in _SUBJECTS_BACK:
        raise InvalidRequest("subject_type is not a known value", field="subject_type")
    if request.status and request.status not in _STATUSES_BACK:
        raise InvalidRequest("status is not a known value", field="status")
    return RelationFilter(
        partner_id=request.partner_id or None,
        subject_type=_SUBJECTS_BACK.get(request.subject_type),
        subject_id=request.subject_id or None,
        status=_STATUSES_BACK.get(request.status),
    )
