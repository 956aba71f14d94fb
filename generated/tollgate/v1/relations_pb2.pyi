import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_TYPE_UNSPECIFIED: _ClassVar[SubjectType]
    SUBJECT_TYPE_USER: _ClassVar[SubjectType]
    SUBJECT_TYPE_ORGANIZATION: _ClassVar[SubjectType]

class RelationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELATION_STATUS_UNSPECIFIED: _ClassVar[RelationStatus]
    RELATION_STATUS_PENDING: _ClassVar[RelationStatus]
    RELATION_STATUS_ACTIVE: _ClassVar[RelationStatus]
    RELATION_STATUS_REJECTED: _ClassVar[RelationStatus]
    RELATION_STATUS_REVOKED: _ClassVar[RelationStatus]
    RELATION_STATUS_EXPIRED: _ClassVar[RelationStatus]
SUBJECT_TYPE_UNSPECIFIED: SubjectType
SUBJECT_TYPE_USER: SubjectType
SUBJECT_TYPE_ORGANIZATION: SubjectType
RELATION_STATUS_UNSPECIFIED: RelationStatus
RELATION_STATUS_PENDING: RelationStatus
RELATION_STATUS_ACTIVE: RelationStatus
RELATION_STATUS_REJECTED: RelationStatus
RELATION_STATUS_REVOKED: RelationStatus
RELATION_STATUS_EXPIRED: RelationStatus

class Relation(_message.Message):
    __slots__ = ("id", "partner_id", "subject_type", "subject_id", "status", "create_time", "update_time", "expire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    partner_id: str
    subject_type: SubjectType
    subject_id: str
    status: RelationStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., partner_id: _Optional[str] = ..., subject_type: _Optional[_Union[SubjectType, str]] = ..., subject_id: _Optional[str] = ..., status: _Optional[_Union[RelationStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RelationEvent(_message.Message):
    __slots__ = ("id", "relation_id", "actor", "time", "from_status", "to_status", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    relation_id: str
    actor: str
    time: _timestamp_pb2.Timestamp
    from_status: RelationStatus
    to_status: RelationStatus
    reason: str
    def __init__(self, id: _Optional[int] = ..., relation_id: _Optional[str] = ..., actor: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., from_status: _Optional[_Union[RelationStatus, str]] = ..., to_status: _Optional[_Union[RelationStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RequestUserRelation(_message.Message):
    __slots__ = ("user_id", "partner_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    partner_id: str
    def __init__(self, user_id: _Optional[str] = ..., partner_id: _Optional[str] = ...) -> None: ...

class ApproveUserRelation(_message.Message):
    __slots__ = ("relation_id", "ttl", "reason")
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    relation_id: str
    ttl: _duration_pb2.Duration
    reason: str
    def __init__(self, relation_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectUserRelation(_message.Message):
    __slots__ = ("relation_id", "reason")
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    relation_id: str
    reason: str
    def __init__(self, relation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeRelation(_message.Message):
    __slots__ = ("relation_id", "reason")
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    relation_id: str
    reason: str
    def __init__(self, relation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IssueConnectToken(_message.Message):
    __slots__ = ("organization_id", "issued_by", "ttl", "relation_ttl")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RELATION_TTL_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    issued_by: str
    ttl: _duration_pb2.Duration
    relation_ttl: _duration_pb2.Duration
    def __init__(self, organization_id: _Optional[str] = ..., issued_by: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., relation_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ClaimOrganizationRelation(_message.Message):
    __slots__ = ("connect_token",)
    CONNECT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connect_token: str
    def __init__(self, connect_token: _Optional[str] = ...) -> None: ...

class ManageRelationRequest(_message.Message):
    __slots__ = ("request_user_relation", "approve_user_relation", "reject_user_relation", "revoke_relation", "issue_connect_token", "claim_organization_relation")
    REQUEST_USER_RELATION_FIELD_NUMBER: _ClassVar[int]
    APPROVE_USER_RELATION_FIELD_NUMBER: _ClassVar[int]
    REJECT_USER_RELATION_FIELD_NUMBER: _ClassVar[int]
    REVOKE_RELATION_FIELD_NUMBER: _ClassVar[int]
    ISSUE_CONNECT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ORGANIZATION_RELATION_FIELD_NUMBER: _ClassVar[int]
    request_user_relation: RequestUserRelation
    approve_user_relation: ApproveUserRelation
    reject_user_relation: RejectUserRelation
    revoke_relation: RevokeRelation
    issue_connect_token: IssueConnectToken
    claim_organization_relation: ClaimOrganizationRelation
    def __init__(self, request_user_relation: _Optional[_Union[RequestUserRelation, _Mapping]] = ..., approve_user_relation: _Optional[_Union[ApproveUserRelation, _Mapping]] = ..., reject_user_relation: _Optional[_Union[RejectUserRelation, _Mapping]] = ..., revoke_relation: _Optional[_Union[RevokeRelation, _Mapping]] = ..., issue_connect_token: _Optional[_Union[IssueConnectToken, _Mapping]] = ..., claim_organization_relation: _Optional[_Union[ClaimOrganizationRelation, _Mapping]] = ...) -> None: ...

class ConnectToken(_message.Message):
    __slots__ = ("id", "token", "organization_id", "expire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    organization_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ..., organization_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ManageRelationResponse(_message.Message):
    __slots__ = ("relation", "connect_token", "created", "revision")
    RELATION_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    relation: Relation
    connect_token: ConnectToken
    created: bool
    revision: str
    def __init__(self, relation: _Optional[_Union[Relation, _Mapping]] = ..., connect_token: _Optional[_Union[ConnectToken, _Mapping]] = ..., created: _Optional[bool] = ..., revision: _Optional[str] = ...) -> None: ...

class GetRelationRequest(_message.Message):
    __slots__ = ("relation_id",)
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    relation_id: str
    def __init__(self, relation_id: _Optional[str] = ...) -> None: ...

class GetRelationResponse(_message.Message):
    __slots__ = ("relation", "events")
    RELATION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    relation: Relation
    events: _containers.RepeatedCompositeFieldContainer[RelationEvent]
    def __init__(self, relation: _Optional[_Union[Relation, _Mapping]] = ..., events: _Optional[_Iterable[_Union[RelationEvent, _Mapping]]] = ...) -> None: ...

class ListRelationsRequest(_message.Message):
    __slots__ = ("partner_id", "subject_type", "subject_id", "status", "page_size", "page_token")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    subject_type: SubjectType
    subject_id: str
    status: RelationStatus
    page_size: int
    page_token: str
    def __init__(self, partner_id: _Optional[str] = ..., subject_type: _Optional[_Union[SubjectType, str]] = ..., subject_id: _Optional[str] = ..., status: _Optional[_Union[RelationStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRelationsResponse(_message.Message):
    __slots__ = ("relations", "next_page_token")
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    next_page_token: str
    def __init__(self, relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
