"""tokens: scope, expiry, revocation

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hwrepo.adapters.db.orm

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tokens", sa.Column("scope", sa.String(length=20), nullable=False, server_default="write")
    )
    op.add_column(
        "tokens",
        sa.Column("expires", hwrepo.adapters.db.orm.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "tokens",
        sa.Column("revoked", hwrepo.adapters.db.orm.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # SQLite (3.35 and later) drops a column in place: rebuilding the table would cascade.
    for column in ("revoked", "expires", "scope"):
        op.drop_column("tokens", column)
