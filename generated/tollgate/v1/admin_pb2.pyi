import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartnerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTNER_STATUS_UNSPECIFIED: _ClassVar[PartnerStatus]
    PARTNER_STATUS_ACTIVE: _ClassVar[PartnerStatus]
    PARTNER_STATUS_SUSPENDED: _ClassVar[PartnerStatus]

class IssuerKeySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISSUER_KEY_SOURCE_UNSPECIFIED: _ClassVar[IssuerKeySource]
    ISSUER_KEY_SOURCE_JWKS: _ClassVar[IssuerKeySource]
    ISSUER_KEY_SOURCE_HMAC_SECRET: _ClassVar[IssuerKeySource]
    ISSUER_KEY_SOURCE_JWKS_URI: _ClassVar[IssuerKeySource]
    ISSUER_KEY_SOURCE_DISCOVERY: _ClassVar[IssuerKeySource]
PARTNER_STATUS_UNSPECIFIED: PartnerStatus
PARTNER_STATUS_ACTIVE: PartnerStatus
PARTNER_STATUS_SUSPENDED: PartnerStatus
ISSUER_KEY_SOURCE_UNSPECIFIED: IssuerKeySource
ISSUER_KEY_SOURCE_JWKS: IssuerKeySource
ISSUER_KEY_SOURCE_HMAC_SECRET: IssuerKeySource
ISSUER_KEY_SOURCE_JWKS_URI: IssuerKeySource
ISSUER_KEY_SOURCE_DISCOVERY: IssuerKeySource

class RemoteKeys(_message.Message):
    __slots__ = ("jwks_uri", "discovery_url", "last_fetch_time", "next_fetch_time", "last_error", "last_error_time", "consecutive_failures")
    JWKS_URI_FIELD_NUMBER: _ClassVar[int]
    DISCOVERY_URL_FIELD_NUMBER: _ClassVar[int]
    LAST_FETCH_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_FETCH_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    jwks_uri: str
    discovery_url: str
    last_fetch_time: _timestamp_pb2.Timestamp
    next_fetch_time: _timestamp_pb2.Timestamp
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    consecutive_failures: int
    def __init__(self, jwks_uri: _Optional[str] = ..., discovery_url: _Optional[str] = ..., last_fetch_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_fetch_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class Partner(_message.Message):
    __slots__ = ("id", "name", "status", "grants", "roles", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: PartnerStatus
    grants: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[PartnerStatus, str]] = ..., grants: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "partner_id", "name", "grants", "roles", "customer_numbers", "create_time", "expire_time", "revoke_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    partner_id: str
    name: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    customer_numbers: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., partner_id: _Optional[str] = ..., name: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ..., customer_numbers: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Issuer(_message.Message):
    __slots__ = ("id", "issuer", "audience", "algorithms", "key_source", "jwks", "require_at_jwt_typ", "customer_claim", "create_time", "key_ids", "remote")
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    KEY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_AT_JWT_TYP_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_CLAIM_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    issuer: str
    audience: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    key_source: IssuerKeySource
    jwks: str
    require_at_jwt_typ: bool
    customer_claim: str
    create_time: _timestamp_pb2.Timestamp
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    remote: RemoteKeys
    def __init__(self, id: _Optional[str] = ..., issuer: _Optional[str] = ..., audience: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., key_source: _Optional[_Union[IssuerKeySource, str]] = ..., jwks: _Optional[str] = ..., require_at_jwt_typ: _Optional[bool] = ..., customer_claim: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_ids: _Optional[_Iterable[str]] = ..., remote: _Optional[_Union[RemoteKeys, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "actor", "action", "target", "time", "outcome", "details")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: int
    actor: str
    action: str
    target: str
    time: _timestamp_pb2.Timestamp
    outcome: str
    details: str
    def __init__(self, id: _Optional[int] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[str] = ..., details: _Optional[str] = ...) -> None: ...

class CreatePartnerRequest(_message.Message):
    __slots__ = ("partner_id", "name", "grants", "roles")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    name: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partner_id: _Optional[str] = ..., name: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class CreatePartnerResponse(_message.Message):
    __slots__ = ("partner",)
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    partner: Partner
    def __init__(self, partner: _Optional[_Union[Partner, _Mapping]] = ...) -> None: ...

class GetPartnerRequest(_message.Message):
    __slots__ = ("partner_id",)
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    def __init__(self, partner_id: _Optional[str] = ...) -> None: ...

class GetPartnerResponse(_message.Message):
    __slots__ = ("partner",)
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    partner: Partner
    def __init__(self, partner: _Optional[_Union[Partner, _Mapping]] = ...) -> None: ...

class ListPartnersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartnersResponse(_message.Message):
    __slots__ = ("partners",)
    PARTNERS_FIELD_NUMBER: _ClassVar[int]
    partners: _containers.RepeatedCompositeFieldContainer[Partner]
    def __init__(self, partners: _Optional[_Iterable[_Union[Partner, _Mapping]]] = ...) -> None: ...

class SetPartnerStatusRequest(_message.Message):
    __slots__ = ("partner_id", "status")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    status: PartnerStatus
    def __init__(self, partner_id: _Optional[str] = ..., status: _Optional[_Union[PartnerStatus, str]] = ...) -> None: ...

class SetPartnerStatusResponse(_message.Message):
    __slots__ = ("partner",)
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    partner: Partner
    def __init__(self, partner: _Optional[_Union[Partner, _Mapping]] = ...) -> None: ...

class SetPartnerGrantsRequest(_message.Message):
    __slots__ = ("partner_id", "grants", "roles")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partner_id: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPartnerGrantsResponse(_message.Message):
    __slots__ = ("partner",)
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    partner: Partner
    def __init__(self, partner: _Optional[_Union[Partner, _Mapping]] = ...) -> None: ...

class IssueApiKeyRequest(_message.Message):
    __slots__ = ("partner_id", "name", "grants", "roles", "customer_numbers", "expire_time")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    name: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    customer_numbers: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, partner_id: _Optional[str] = ..., name: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ..., customer_numbers: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    key: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("partner_id",)
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    def __init__(self, partner_id: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys",)
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RegisterIssuerRequest(_message.Message):
    __slots__ = ("issuer", "audience", "algorithms", "jwks", "hmac_secret", "jwks_uri", "discovery_url", "allow_any_typ", "customer_claim")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    HMAC_SECRET_FIELD_NUMBER: _ClassVar[int]
    JWKS_URI_FIELD_NUMBER: _ClassVar[int]
    DISCOVERY_URL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ANY_TYP_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_CLAIM_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    audience: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    jwks: str
    hmac_secret: bytes
    jwks_uri: str
    discovery_url: str
    allow_any_typ: bool
    customer_claim: str
    def __init__(self, issuer: _Optional[str] = ..., audience: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ..., jwks: _Optional[str] = ..., hmac_secret: _Optional[bytes] = ..., jwks_uri: _Optional[str] = ..., discovery_url: _Optional[str] = ..., allow_any_typ: _Optional[bool] = ..., customer_claim: _Optional[str] = ...) -> None: ...

class RegisterIssuerResponse(_message.Message):
    __slots__ = ("issuer",)
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    issuer: Issuer
    def __init__(self, issuer: _Optional[_Union[Issuer, _Mapping]] = ...) -> None: ...

class RotateIssuerKeysRequest(_message.Message):
    __slots__ = ("issuer", "jwks")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    jwks: str
    def __init__(self, issuer: _Optional[str] = ..., jwks: _Optional[str] = ...) -> None: ...

class RotateIssuerKeysResponse(_message.Message):
    __slots__ = ("issuer",)
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    issuer: Issuer
    def __init__(self, issuer: _Optional[_Union[Issuer, _Mapping]] = ...) -> None: ...

class RefreshIssuerKeysRequest(_message.Message):
    __slots__ = ("issuer",)
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    def __init__(self, issuer: _Optional[str] = ...) -> None: ...

class RefreshIssuerKeysResponse(_message.Message):
    __slots__ = ("issuer",)
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    issuer: Issuer
    def __init__(self, issuer: _Optional[_Union[Issuer, _Mapping]] = ...) -> None: ...

class ListIssuersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListIssuersResponse(_message.Message):
    __slots__ = ("issuers",)
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    issuers: _containers.RepeatedCompositeFieldContainer[Issuer]
    def __init__(self, issuers: _Optional[_Iterable[_Union[Issuer, _Mapping]]] = ...) -> None: ...

class ListRolesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Role(_message.Message):
    __slots__ = ("name", "grants")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRolesResponse(_message.Message):
    __slots__ = ("roles",)
    ROLES_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedCompositeFieldContainer[Role]
    def __init__(self, roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("issuer", "jti", "expire_time")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    jti: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, issuer: _Optional[str] = ..., jti: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("issuer_id", "jti")
    ISSUER_ID_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    issuer_id: str
    jti: str
    def __init__(self, issuer_id: _Optional[str] = ..., jti: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("actor", "action", "start_time", "end_time", "page_size", "page_token")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    actor: str
    action: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, actor: _Optional[str] = ..., action: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class OAuthClient(_message.Message):
    __slots__ = ("id", "partner_id", "name", "scopes", "customer_numbers", "refresh_tokens", "create_time", "secret_rotate_time", "revoke_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SECRET_ROTATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    partner_id: str
    name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    customer_numbers: _containers.RepeatedScalarFieldContainer[str]
    refresh_tokens: bool
    create_time: _timestamp_pb2.Timestamp
    secret_rotate_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., partner_id: _Optional[str] = ..., name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., customer_numbers: _Optional[_Iterable[str]] = ..., refresh_tokens: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., secret_rotate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SigningKey(_message.Message):
    __slots__ = ("kid", "algorithm", "active", "public_jwk", "create_time", "retire_time", "publish_until_time")
    KID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_JWK_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RETIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_UNTIL_TIME_FIELD_NUMBER: _ClassVar[int]
    kid: str
    algorithm: str
    active: bool
    public_jwk: str
    create_time: _timestamp_pb2.Timestamp
    retire_time: _timestamp_pb2.Timestamp
    publish_until_time: _timestamp_pb2.Timestamp
    def __init__(self, kid: _Optional[str] = ..., algorithm: _Optional[str] = ..., active: _Optional[bool] = ..., public_jwk: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_until_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateOAuthClientRequest(_message.Message):
    __slots__ = ("partner_id", "name", "scopes", "customer_numbers", "refresh_tokens")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    customer_numbers: _containers.RepeatedScalarFieldContainer[str]
    refresh_tokens: bool
    def __init__(self, partner_id: _Optional[str] = ..., name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., customer_numbers: _Optional[_Iterable[str]] = ..., refresh_tokens: _Optional[bool] = ...) -> None: ...

class CreateOAuthClientResponse(_message.Message):
    __slots__ = ("client", "client_secret")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    client: OAuthClient
    client_secret: str
    def __init__(self, client: _Optional[_Union[OAuthClient, _Mapping]] = ..., client_secret: _Optional[str] = ...) -> None: ...

class ListOAuthClientsRequest(_message.Message):
    __slots__ = ("partner_id",)
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    def __init__(self, partner_id: _Optional[str] = ...) -> None: ...

class ListOAuthClientsResponse(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[OAuthClient]
    def __init__(self, clients: _Optional[_Iterable[_Union[OAuthClient, _Mapping]]] = ...) -> None: ...

class RotateOAuthClientSecretRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class RotateOAuthClientSecretResponse(_message.Message):
    __slots__ = ("client", "client_secret")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    client: OAuthClient
    client_secret: str
    def __init__(self, client: _Optional[_Union[OAuthClient, _Mapping]] = ..., client_secret: _Optional[str] = ...) -> None: ...

class RevokeOAuthClientRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class RevokeOAuthClientResponse(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: OAuthClient
    def __init__(self, client: _Optional[_Union[OAuthClient, _Mapping]] = ...) -> None: ...

class RotateSigningKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateSigningKeyResponse(_message.Message):
    __slots__ = ("key", "previous")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    key: SigningKey
    previous: SigningKey
    def __init__(self, key: _Optional[_Union[SigningKey, _Mapping]] = ..., previous: _Optional[_Union[SigningKey, _Mapping]] = ...) -> None: ...

class ListSigningKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSigningKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[SigningKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[SigningKey, _Mapping]]] = ...) -> None: ...
