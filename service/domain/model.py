"""Facts the core reasons about, as frozen dataclasses. The store converts its rows into these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class PartnerStatus(enum.StrEnum):
    ACTIVE = "active"
    # A suspended partner's credentials are all refused with token_revoked.
    SUSPENDED = "suspended"


class CredentialKind(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"


class SubjectType(enum.StrEnum):
    USER = "user"
    ORGANIZATION = "organization"


class RelationStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class PartnerRecord:
    """A client application. `grants` are permission strings ("user:read", "admin"); `roles` name
    policy roles. Together they are the ceiling of every credential the partner holds."""

    id: str
    name: str
    status: PartnerStatus
    grants: tuple[str, ...]
    roles: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    """An opaque API key. Only `digest` (SHA-256 hex of the full key) is stored, never the key.

    `grants`/`roles` narrow the partner's ceiling; both empty means "everything the partner has".
    `customer_numbers` empty means the key may act for no customer.
    """

    id: str
    partner_id: str
    digest: str
    name: str
    grants: tuple[str, ...]
    roles: tuple[str, ...]
    customer_numbers: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class IssuerRecord:
    """A trusted JWT issuer.

    `jwks` is a public JWK Set ({"keys": [...]}) for asymmetric algorithms; `hmac_secret_sealed`
    is the HS* shared secret encrypted with the server's key-encryption key (never plaintext).
    An issuer is either asymmetric or HMAC, never both (RFC 8725 section 3.1).
    """

    id: str
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks: dict[str, Any] | None
    hmac_secret_sealed: str | None
    # RFC 9068 demands typ "at+jwt"; an issuer may be relaxed explicitly for legacy tokens.
    require_at_jwt_typ: bool
    # Claim holding the customer numbers (a list or a space-separated string).
    customer_claim: str
    created_at: datetime


@dataclass(frozen=True)
class RelationRecord:
    id: str
    partner_id: str
    subject_type: SubjectType
    subject_id: str
    status: RelationStatus
    created_at: datetime
    updated_at: datetime
    # For pending: when the request lapses. For active: when the relation ends (None: never).
    expires_at: datetime | None = None


@dataclass(frozen=True)
class RelationEventRecord:
    """One appended change. `from_status` is None for the creation event. `id` is 0 until stored."""

    relation_id: str
    actor: str
    at: datetime
    from_status: RelationStatus | None
    to_status: RelationStatus
    reason: str
    id: int = 0


@dataclass(frozen=True)
class ConnectTokenRecord:
    """A single-use organization connect token. Only its digest is stored."""

    id: str
    digest: str
    organization_id: str
    issued_by: str
    created_at: datetime
    expires_at: datetime
    relation_ttl_seconds: int | None = None
    used_at: datetime | None = None
    used_by_partner_id: str | None = None


@dataclass(frozen=True)
class RelationFilter:
    partner_id: str | None = None
    subject_type: SubjectType | None = None
    subject_id: str | None = None
    status: RelationStatus | None = None


@dataclass(frozen=True)
class Principal:
    partner_id: str
    credential_id: str
    kind: CredentialKind


@dataclass(frozen=True)
class AuthenticatedCredential:
    """What verification proves about a credential, before grants are computed by the policy.

    `own_grants`/`own_roles`: the credential's grant strings and roles (API key), empty = inherit.
    `token_scopes`: the JWT's scope/scp values, None when the token carries no scope claim.
    """

    principal: Principal
    partner: PartnerRecord
    own_grants: tuple[str, ...] = ()
    own_roles: tuple[str, ...] = ()
    token_scopes: tuple[str, ...] | None = None
    customer_numbers: frozenset[str] = field(default_factory=frozenset)
    # When the credential stops being valid (JWT exp, API key expiry); bounds any caching of it.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class AdminAuditRecord:
    """One administrative action, recorded with the change it made (or alone, when refused).

    `actor`: "operator" (the command line) or "admin:<partner id>"; a refused non-admin caller is
    named as in relation events ("partner:<id>", "platform:<id>"). `action`: e.g. "partner.create".
    `target`: what was acted on (partner id, key id, issuer id, ...). `outcome`: "ok" or the error
    reason. `details`: JSON-ready facts of the action, never a secret. `id` is 0 until stored.
    """

    actor: str
    action: str
    target: str
    at: datetime
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    id: int = 0
