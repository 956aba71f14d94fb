"""The admin audit trail: one row per administrative action (who, what, on what, when, outcome).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are timestamptz on PostgreSQL; on SQLite the store writes UTC text.
TIMESTAMP = sa.DateTime(timezone=True)
# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", BIG_ID, nullable=False, autoincrement=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_audit"),
        # Never reuse an id on SQLite, so paging order stays insertion order.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_admin_audit_actor", "admin_audit", ["actor", "id"])
    op.create_index("ix_admin_audit_action", "admin_audit", ["action", "id"])
    op.create_index("ix_admin_audit_at", "admin_audit", ["at"])


def downgrade() -> None:
    op.drop_table("admin_audit")
