"""Remote issuers: an issuer's keys fetched from its jwks_uri (found by OpenID Connect discovery or
given), with the fetch status and the claims that keep fetching to one process cluster-wide.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
_TIMESTAMPS = ("keys_fetched_at", "keys_refresh_at", "fetch_error_at", "fetch_claimed_until", "refetch_not_before")


def upgrade() -> None:
    with op.batch_alter_table("jwt_issuers") as table:
        table.add_column(sa.Column("jwks_uri", sa.String(), nullable=True))
        table.add_column(sa.Column("discovery_url", sa.String(), nullable=True))
        table.add_column(sa.Column("fetch_error", sa.Text(), nullable=True))
        table.add_column(sa.Column("fetch_failures", sa.Integer(), nullable=False, server_default="0"))
        for name in _TIMESTAMPS:
            table.add_column(sa.Column(name, TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jwt_issuers") as table:
        for name in ("jwks_uri", "discovery_url", "fetch_error", "fetch_failures", *_TIMESTAMPS):
            table.drop_column(name)
