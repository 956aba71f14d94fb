from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_LEVEL_UNSPECIFIED: _ClassVar[AccessLevel]
    ACCESS_LEVEL_NONE: _ClassVar[AccessLevel]
    ACCESS_LEVEL_READ: _ClassVar[AccessLevel]
    ACCESS_LEVEL_WRITE: _ClassVar[AccessLevel]

class CredentialKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_KIND_UNSPECIFIED: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_API_KEY: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_JWT: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_OAUTH_CLIENT: _ClassVar[CredentialKind]
ACCESS_LEVEL_UNSPECIFIED: AccessLevel
ACCESS_LEVEL_NONE: AccessLevel
ACCESS_LEVEL_READ: AccessLevel
ACCESS_LEVEL_WRITE: AccessLevel
CREDENTIAL_KIND_UNSPECIFIED: CredentialKind
CREDENTIAL_KIND_API_KEY: CredentialKind
CREDENTIAL_KIND_JWT: CredentialKind
CREDENTIAL_KIND_OAUTH_CLIENT: CredentialKind

class Grant(_message.Message):
    __slots__ = ("scope", "level")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    scope: str
    level: AccessLevel
    def __init__(self, scope: _Optional[str] = ..., level: _Optional[_Union[AccessLevel, str]] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("partner_id", "credential_id", "credential_kind")
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_KIND_FIELD_NUMBER: _ClassVar[int]
    partner_id: str
    credential_id: str
    credential_kind: CredentialKind
    def __init__(self, partner_id: _Optional[str] = ..., credential_id: _Optional[str] = ..., credential_kind: _Optional[_Union[CredentialKind, str]] = ...) -> None: ...
