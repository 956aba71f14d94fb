"""proto <-> domain conversions, without a server."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from tollgate.v1 import authorization_pb2, common_pb2, relations_pb2

from service.domain.decision import Decision, Reason, deny
from service.domain.errors import InvalidRequest
from service.domain.model import (
    CredentialKind,
    Principal,
    RelationEventRecord,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.domain.scopes import AccessLevel, Permission
from service.transport.convert import (
    check_query_from_proto,
    check_response_to_proto,
    duration_or_none,
    event_to_proto,
    relation_filter_from_proto,
    relation_to_proto,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_check_request_to_query():
    query = check_query_from_proto(authorization_pb2.CheckRequest(
        authorization="Bearer x", api_key="k", operation="getUser", permissions=["user:read"],
        resource=authorization_pb2.Resource(user_id="u", organization_id="o", customer_id="c")), "")
    assert (query.authorization, query.api_key, query.operation, query.permissions) == (
        "Bearer x", "k", "getUser", ["user:read"])
    assert (query.resource.user_id, query.resource.organization_id, query.resource.customer_id) == ("u", "o", "c")


def test_every_reason_has_a_wire_enum():
    for reason in Reason:
        response = check_response_to_proto(deny(reason, "m"), realm="r", decision_id="d")
        assert response.reason == reason.value
        assert authorization_pb2.DenyReason.Name(response.deny_reason) == f"DENY_REASON_{reason.name}"
        assert response.http_status == reason.http_status and json.loads(response.body)


def test_allow_response_carries_principal_and_grants():
    decision = Decision(allowed=True, principal=Principal("p", "key_1", CredentialKind.JWT),
                        grants=(Permission("user", AccessLevel.WRITE),))
    response = check_response_to_proto(decision, realm="r", decision_id="d1")
    assert response.allowed and response.http_status == 200 and response.reason == "" and response.body == ""
    assert response.principal.credential_kind == common_pb2.CREDENTIAL_KIND_JWT
    assert [(g.scope, g.level) for g in response.grants] == [("user", common_pb2.ACCESS_LEVEL_WRITE)]


def test_relation_and_event_round_out():
    relation = RelationRecord("rel_1", "p", SubjectType.ORGANIZATION, "o", RelationStatus.ACTIVE, NOW, NOW, None)
    message = relation_to_proto(relation)
    assert message.status == relations_pb2.RELATION_STATUS_ACTIVE
    assert message.subject_type == relations_pb2.SUBJECT_TYPE_ORGANIZATION
    assert message.create_time.ToDatetime(UTC) == NOW and not message.HasField("expire_time")
    event = event_to_proto(RelationEventRecord("rel_1", "system", NOW, None, RelationStatus.PENDING, "r", id=3))
    assert event.from_status == relations_pb2.RELATION_STATUS_UNSPECIFIED and event.id == 3


def test_duration_presence_matters():
    action = relations_pb2.ApproveUserRelation()
    assert duration_or_none(action, "ttl", "ttl") is None
    action.ttl.CopyFrom(Duration(seconds=90))
    assert duration_or_none(action, "ttl", "ttl") == timedelta(seconds=90)
    action.ttl.CopyFrom(Duration(seconds=-1))
    with pytest.raises(InvalidRequest):
        duration_or_none(action, "ttl", "ttl")


def test_relation_filter():
    assert relation_filter_from_proto(relations_pb2.ListRelationsRequest()).partner_id is None
    chosen = relation_filter_from_proto(relations_pb2.ListRelationsRequest(
        partner_id="p", status=relations_pb2.RELATION_STATUS_REVOKED, subject_type=relations_pb2.SUBJECT_TYPE_USER))
    assert (chosen.partner_id, chosen.status, chosen.subject_type) == ("p", RelationStatus.REVOKED, SubjectType.USER)
    with pytest.raises(InvalidRequest):
        relation_filter_from_proto(relations_pb2.ListRelationsRequest(status=99))
