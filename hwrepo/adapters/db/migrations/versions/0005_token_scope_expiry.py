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
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=20), nullable=False, server_default="write")
        )
        batch.add_column(
            sa.Column("expires", hwrepo.adapters.db.orm.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("revoked", hwrepo.adapters.db.orm.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked")
        batch.drop_column("expires")
        batch.drop_column("scope")
