"""The initial schema: partners, API keys, JWT issuers, revoked tokens, relations and their
events, connect tokens.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Hand-written to run on SQLite and PostgreSQL alike; service/store/models.py describes the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are timestamptz on PostgreSQL; on SQLite the store writes UTC text.
TIMESTAMP = sa.DateTime(timezone=True)
# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_STATUSES = sa.text("status IN ('pending', 'active')")


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_partners"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("partner_id", sa.String(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("customer_numbers", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name="fk_api_keys_partner_id_partners"),
    )
    op.create_index("uq_api_keys_digest", "api_keys", ["digest"], unique=True)
    op.create_index("ix_api_keys_partner_id", "api_keys", ["partner_id"])

    op.create_table(
        "jwt_issuers",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("algorithms", sa.JSON(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("hmac_secret_sealed", sa.Text(), nullable=True),
        sa.Column("require_at_jwt_typ", sa.Boolean(), nullable=False),
        sa.Column("customer_claim", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jwt_issuers"),
        sa.UniqueConstraint("issuer", name="uq_jwt_issuers_issuer"),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("issuer_id", sa.String(), nullable=False),
        sa.Column("jti", sa.String(), nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("issuer_id", "jti", name="pk_revoked_tokens"),
        sa.ForeignKeyConstraint(["issuer_id"], ["jwt_issuers.id"], name="fk_revoked_tokens_issuer_id_jwt_issuers"),
    )

    op.create_table(
        "relations",
        sa.Column("seq", BIG_ID, nullable=False, autoincrement=True),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("partner_id", sa.String(), nullable=False),
        sa.Column("subject_type", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_relations"),
        sa.UniqueConstraint("id", name="uq_relations_id"),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name="fk_relations_partner_id_partners"),
        # Never reuse a seq on SQLite, so paging order stays creation order.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_relations_triple", "relations", ["partner_id", "subject_type", "subject_id"])
    # At most one open (pending or active) relation per triple, even under concurrent inserts.
    op.create_index("uq_relations_open", "relations", ["partner_id", "subject_type", "subject_id"], unique=True,
                    sqlite_where=OPEN_STATUSES, postgresql_where=OPEN_STATUSES)
    op.create_index("ix_relations_expires_at", "relations", ["expires_at"])

    op.create_table(
        "relation_events",
        sa.Column("id", BIG_ID, nullable=False, autoincrement=True),
        sa.Column("relation_id", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("from_status", sa.String(), nullable=True),
        sa.Column("to_status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_relation_events"),
        sa.ForeignKeyConstraint(["relation_id"], ["relations.id"], name="fk_relation_events_relation_id_relations"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_relation_events_relation_id", "relation_events", ["relation_id"])

    op.create_table(
        "connect_tokens",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("organization_id", sa.String(), nullable=False),
        sa.Column("issued_by", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("relation_ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.Column("used_by_partner_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_connect_tokens"),
        sa.ForeignKeyConstraint(["used_by_partner_id"], ["partners.id"],
                                name="fk_connect_tokens_used_by_partner_id_partners"),
    )
    op.create_index("uq_connect_tokens_digest", "connect_tokens", ["digest"], unique=True)


def downgrade() -> None:
    for table in ("connect_tokens", "relation_events", "relations", "revoked_tokens", "jwt_issuers", "api_keys",
                  "partners"):
        op.drop_table(table)
