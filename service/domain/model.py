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
    # A JWT access token of a registered (external) issuer.
    JWT = "jwt"
    # An access token Tollgate issued to one of its OAuth clients (its own, built-in issuer).
    OAUTH_CLIENT = "oauth_client"


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
class RemoteKeys:
    """Where a remote issuer's keys are fetched from, and how the fetches went.

    `jwks_uri` is fetched; `discovery_url` (an OpenID Connect Discovery / RFC 8414 document whose
    `issuer` must equal the issuer's) is where it was found, if it was. The rest is status, kept
    for operators: the last successful fetch, when the next one is due, and the last failure with
    how many fetches have failed in a row since the last success.
    """

    jwks_uri: str
    discovery_url: str | None = None
    fetched_at: datetime | None = None
    refresh_at: datetime | None = None
    error: str | None = None
    error_at: datetime | None = None
    failures: int = 0


@dataclass(frozen=True)
class IssuerRecord:
    """A trusted JWT issuer.

    `jwks` is a public JWK Set ({"keys": [...]}) for asymmetric algorithms; `hmac_secret_sealed`
    is the HS* shared secret encrypted with the server's key-encryption key (never plaintext).
    An issuer is either asymmetric or HMAC, never both (RFC 8725 section 3.1). A remote issuer
    (`remote` set) has a JWKS too: the last good set fetched from its `jwks_uri`.
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
    remote: RemoteKeys | None = None


@dataclass(frozen=True)
class OAuthClientRecord:
    """An OAuth client of a partner (RFC 6749 section 2): a confidential client that authenticates
    with its id and secret. Only `secret_digest` (SHA-256 hex of the secret) is stored.

    `scopes` narrow what its tokens may carry below the partner's grants (empty: the partner's);
    `customer_numbers` go into its tokens' customer claim; `refresh_tokens` turns on refresh
    tokens for its client_credentials grants (RFC 6749 section 4.4.3 says SHOULD NOT by default).
    """

    id: str
    partner_id: str
    name: str
    secret_digest: str
    scopes: tuple[str, ...]
    customer_numbers: tuple[str, ...]
    refresh_tokens: bool
    created_at: datetime
    secret_rotated_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class RefreshFamilyRecord:
    """Every refresh token descending from one grant (RFC 9700 section 4.14.2): rotation adds a
    token to the family, and reuse of a spent one revokes the whole family, together with the
    access tokens issued from it. `scope` is the grant's, which a refresh may narrow but never widen."""

    id: str
    client_id: str
    scope: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class RefreshTokenRecord:
    """One refresh token; only its digest is stored. `used_at` is set when it is rotated."""

    id: str
    family_id: str
    client_id: str
    digest: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True)
class SigningKeyRecord:
    """A key Tollgate signs its access tokens with. The private key is sealed with the
    key-encryption key; `public_jwk` is what /.well-known/jwks.json publishes.

    The active key (retired_at None) signs. A retired key signs nothing more but is published
    until `publish_until`, when every token it signed has expired."""

    kid: str
    algorithm: str
    private_key_sealed: str
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None = None
    publish_until: datetime | None = None

    def published_at(self, now: datetime) -> bool:
        return self.publish_until is None or self.publish_until > now


def active_signing_key(keys: list[SigningKeyRecord]) -> SigningKeyRecord | None:
    """The one key of `keys` (every key, newest first) that signs now."""
    return next((key for key in keys if key.retired_at is None), None)


def published_signing_keys(keys: list[SigningKeyRecord], now: datetime) -> list[SigningKeyRecord]:
    """The keys of `keys` (every key, newest first) published at `now`: what a reader that keeps
    every key judges against the clock, since a key's publication ends on its own."""
    return [key for key in keys if key.published_at(now)]


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
    # A verified JWT's claims whose values are strings, as (name, value) pairs in token order. The
    # verifier records them without knowing the policy: the policy's token_user_claim names the
    # one holding the user the token acts for (domain.decide.acting_user). Empty for API keys,
    # which never act for a user.
    token_claims: tuple[tuple[str, str], ...] = ()

    def claim(self, name: str) -> str | None:
        """The verified token's string claim `name`; None when it has none (or not a string)."""
        for key, value in self.token_claims:
            if key == name:
                return value
        return None


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
