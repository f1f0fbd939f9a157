"""projects: required checks

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "projects", sa.Column("required_checks", sa.JSON(), nullable=False, server_default="[]")
    )


def downgrade() -> None:
    # SQLite (3.35 and later) drops a column in place: rebuilding the table would cascade.
    for column in ("required_checks",):
        op.drop_column("projects", column)
