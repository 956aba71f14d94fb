from tollgate.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DenyReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DENY_REASON_UNSPECIFIED: _ClassVar[DenyReason]
    DENY_REASON_UNKNOWN_OPERATION: _ClassVar[DenyReason]
    DENY_REASON_MISSING_TOKEN: _ClassVar[DenyReason]
    DENY_REASON_INVALID_TOKEN: _ClassVar[DenyReason]
    DENY_REASON_TOKEN_EXPIRED: _ClassVar[DenyReason]
    DENY_REASON_TOKEN_REVOKED: _ClassVar[DenyReason]
    DENY_REASON_INSUFFICIENT_SCOPE: _ClassVar[DenyReason]
    DENY_REASON_USER_ACCESS_DENIED: _ClassVar[DenyReason]
    DENY_REASON_ORGANIZATION_ACCESS_DENIED: _ClassVar[DenyReason]
    DENY_REASON_CUSTOMER_ACCESS_DENIED: _ClassVar[DenyReason]
    DENY_REASON_RATE_LIMIT_EXCEEDED: _ClassVar[DenyReason]

class StepOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_OUTCOME_UNSPECIFIED: _ClassVar[StepOutcome]
    STEP_OUTCOME_PASSED: _ClassVar[StepOutcome]
    STEP_OUTCOME_FAILED: _ClassVar[StepOutcome]
    STEP_OUTCOME_SKIPPED: _ClassVar[StepOutcome]
DENY_REASON_UNSPECIFIED: DenyReason
DENY_REASON_UNKNOWN_OPERATION: DenyReason
DENY_REASON_MISSING_TOKEN: DenyReason
DENY_REASON_INVALID_TOKEN: DenyReason
DENY_REASON_TOKEN_EXPIRED: DenyReason
DENY_REASON_TOKEN_REVOKED: DenyReason
DENY_REASON_INSUFFICIENT_SCOPE: DenyReason
DENY_REASON_USER_ACCESS_DENIED: DenyReason
DENY_REASON_ORGANIZATION_ACCESS_DENIED: DenyReason
DENY_REASON_CUSTOMER_ACCESS_DENIED: DenyReason
DENY_REASON_RATE_LIMIT_EXCEEDED: DenyReason
STEP_OUTCOME_UNSPECIFIED: StepOutcome
STEP_OUTCOME_PASSED: StepOutcome
STEP_OUTCOME_FAILED: StepOutcome
STEP_OUTCOME_SKIPPED: StepOutcome

class Resource(_message.Message):
    __slots__ = ("user_id", "organization_id", "customer_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    organization_id: str
    customer_id: str
    def __init__(self, user_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("authorization", "api_key", "operation", "permissions", "resource", "at_least_as_fresh", "client_address", "explain")
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_AS_FRESH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    authorization: str
    api_key: str
    operation: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    resource: Resource
    at_least_as_fresh: str
    client_address: str
    explain: bool
    def __init__(self, authorization: _Optional[str] = ..., api_key: _Optional[str] = ..., operation: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., at_least_as_fresh: _Optional[str] = ..., client_address: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class BatchCheckItem(_message.Message):
    __slots__ = ("operation", "permissions", "resource")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    operation: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    resource: Resource
    def __init__(self, operation: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class BatchCheckRequest(_message.Message):
    __slots__ = ("authorization", "api_key", "items", "at_least_as_fresh", "client_address", "explain")
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_AS_FRESH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    authorization: str
    api_key: str
    items: _containers.RepeatedCompositeFieldContainer[BatchCheckItem]
    at_least_as_fresh: str
    client_address: str
    explain: bool
    def __init__(self, authorization: _Optional[str] = ..., api_key: _Optional[str] = ..., items: _Optional[_Iterable[_Union[BatchCheckItem, _Mapping]]] = ..., at_least_as_fresh: _Optional[str] = ..., client_address: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class BatchCheckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResponse, _Mapping]]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("allowed", "http_status", "reason", "deny_reason", "message", "field", "body", "www_authenticate", "principal", "grants", "decision_id", "retry_after_seconds", "explanation")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DENY_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    WWW_AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    http_status: int
    reason: str
    deny_reason: DenyReason
    message: str
    field: str
    body: str
    www_authenticate: str
    principal: _common_pb2.Principal
    grants: _containers.RepeatedCompositeFieldContainer[_common_pb2.Grant]
    decision_id: str
    retry_after_seconds: int
    explanation: _containers.RepeatedCompositeFieldContainer[ExplainStep]
    def __init__(self, allowed: _Optional[bool] = ..., http_status: _Optional[int] = ..., reason: _Optional[str] = ..., deny_reason: _Optional[_Union[DenyReason, str]] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., body: _Optional[str] = ..., www_authenticate: _Optional[str] = ..., principal: _Optional[_Union[_common_pb2.Principal, _Mapping]] = ..., grants: _Optional[_Iterable[_Union[_common_pb2.Grant, _Mapping]]] = ..., decision_id: _Optional[str] = ..., retry_after_seconds: _Optional[int] = ..., explanation: _Optional[_Iterable[_Union[ExplainStep, _Mapping]]] = ...) -> None: ...

class ExplainStep(_message.Message):
    __slots__ = ("name", "outcome", "facts")
    class FactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome: StepOutcome
    facts: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., outcome: _Optional[_Union[StepOutcome, str]] = ..., facts: _Optional[_Mapping[str, str]] = ...) -> None: ...
