"""The schema as SQLAlchemy declarative models. Only the store sees these; the rest of the service
sees the records of service/domain/model.py. The schema itself is created by the Alembic
migrations (migrations/versions), which must stay in step with this file (a test compares them).

Conventions: enums are stored as their string values, tuples of strings as JSON lists, and every
timestamp through UtcDateTime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed, so the migrations can name them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

# Statuses under which a relation holds its (partner, subject) triple; see uq_relations_open.
OPEN_STATUSES_SQL = "status IN ('pending', 'active')"


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in as UTC and always comes out timezone-aware UTC.

    PostgreSQL keeps the instant (timestamptz); SQLite keeps text without a zone, so UTC wall time
    is stored there, which also keeps its text comparisons chronological. Naive datetimes are
    refused: their meaning depends on the machine.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
StringList = JSON
# none_as_null: a missing JWKS is SQL NULL, not the JSON value null.
OptionalJson = JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PartnerRow(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    grants: Mapped[list[str]] = mapped_column(StringList)
    roles: Mapped[list[str]] = mapped_column(StringList)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        # Every authenticated request looks its key up by digest.
        Index("uq_api_keys_digest", "digest", unique=True),
        Index("ix_api_keys_partner_id", "partner_id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    digest: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    grants: Mapped[list[str]] = mapped_column(StringList)
    roles: Mapped[list[str]] = mapped_column(StringList)
    customer_numbers: Mapped[list[str]] = mapped_column(StringList)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class IssuerRow(Base):
    __tablename__ = "jwt_issuers"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    # Looked up by the token's exact `iss` on every JWT.
    issuer: Mapped[str] = mapped_column(String, unique=True)
    audience: Mapped[str] = mapped_column(String)
    algorithms: Mapped[list[str]] = mapped_column(StringList)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(OptionalJson, nullable=True)
    hmac_secret_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    require_at_jwt_typ: Mapped[bool] = mapped_column(Boolean)
    customer_claim: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # A remote issuer's keys (in `jwks`, the last good set) come from here; null for the others.
    jwks_uri: Mapped[str | None] = mapped_column(String, nullable=True)
    discovery_url: Mapped[str | None] = mapped_column(String, nullable=True)
    # Fetch status, for operators and for the refresh schedule.
    keys_fetched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    keys_refresh_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    fetch_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    fetch_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    fetch_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Claims taken by compare-and-set: one fetcher at a time, and one refetch for an unknown key
    # id per cool-down, across every process of every replica.
    fetch_claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    refetch_not_before: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RevokedTokenRow(Base):
    __tablename__ = "revoked_tokens"

    issuer_id: Mapped[str] = mapped_column(ForeignKey("jwt_issuers.id"), primary_key=True)
    jti: Mapped[str] = mapped_column(String, primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The token's own expiry: after it the row is no longer needed.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RelationRow(Base):
    __tablename__ = "relations"
    __table_args__ = (
        # Check's is_active and find_open: one lookup by the triple.
        Index("ix_relations_triple", "partner_id", "subject_type", "subject_id"),
        # At most one open (pending or active) relation per triple, decided by the database even
        # under concurrent inserts.
        Index("uq_relations_open", "partner_id", "subject_type", "subject_id", unique=True,
              sqlite_where=text(OPEN_STATUSES_SQL), postgresql_where=text(OPEN_STATUSES_SQL)),
        # The expiry sweep.
        Index("ix_relations_expires_at", "expires_at"),
        # Never reuse a seq on SQLite, so paging order is creation order.
        {"sqlite_autoincrement": True},
    )

    # Creation order for keyset paging; the public identifier is `id`.
    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String, unique=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    subject_type: Mapped[str] = mapped_column(String)
    subject_id: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RelationEventRow(Base):
    __tablename__ = "relation_events"
    __table_args__ = (
        Index("ix_relation_events_relation_id", "relation_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    relation_id: Mapped[str] = mapped_column(ForeignKey("relations.id"))
    actor: Mapped[str] = mapped_column(String)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    from_status: Mapped[str | None] = mapped_column(String, nullable=True)
    to_status: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)


class ConnectTokenRow(Base):
    __tablename__ = "connect_tokens"
    __table_args__ = (Index("uq_connect_tokens_digest", "digest", unique=True),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    digest: Mapped[str] = mapped_column(String)
    organization_id: Mapped[str] = mapped_column(String)
    issued_by: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    relation_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    used_by_partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"), nullable=True)


class StoreRevisionRow(Base):
    """A single row (id 1): the revision every writing unit of work advances before it commits."""

    __tablename__ = "store_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class AdminAuditRow(Base):
    """One administrative action: who, what, on what, when, and how it ended. Append-only."""

    __tablename__ = "admin_audit"
    __table_args__ = (
        # ListAuditEvents filters by actor, action and time, paging on id.
        Index("ix_admin_audit_actor", "actor", "id"),
        Index("ix_admin_audit_action", "action", "id"),
        Index("ix_admin_audit_at", "at"),
        # Never reuse an id on SQLite, so paging order is insertion order.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    target: Mapped[str] = mapped_column(String)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class OAuthClientRow(Base):
    """An OAuth client of a partner; only the digest of its secret is kept."""

    __tablename__ = "oauth_clients"
    __table_args__ = (Index("ix_oauth_clients_partner_id", "partner_id"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String)
    secret_digest: Mapped[str] = mapped_column(String)
    scopes: Mapped[list[str]] = mapped_column(StringList)
    customer_numbers: Mapped[list[str]] = mapped_column(StringList)
    refresh_tokens: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RefreshFamilyRow(Base):
    """The refresh tokens descending from one grant; revoking it revokes them all."""

    __tablename__ = "refresh_families"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    scope: Mapped[list[str]] = mapped_column(StringList)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RefreshTokenRow(Base):
    __tablename__ = "refresh_tokens"
    __table_args__ = (
        # Every refresh and revocation looks its token up by digest.
        Index("uq_refresh_tokens_digest", "digest", unique=True),
        Index("ix_refresh_tokens_family_id", "family_id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("refresh_families.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    digest: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RevokedAccessTokenRow(Base):
    """An access token Tollgate issued and revoked before it expired, by jti."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String, primary_key=True)
    client_id: Mapped[str] = mapped_column(String)
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The token's own expiry: after it the row is no longer needed.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SigningKeyRow(Base):
    """A key of Tollgate's own issuer; the private key is sealed with the key-encryption key."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        # `active` is true for the one key that signs and NULL for the others (NULLs are distinct
        # in a unique index), so the database decides when two workers create the first key at once.
        Index("uq_signing_keys_active", "active", unique=True),
    )

    kid: Mapped[str] = mapped_column(String, primary_key=True)
    algorithm: Mapped[str] = mapped_column(String)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    active: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    publish_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
