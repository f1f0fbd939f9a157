"""check superseded_by: the newer revision a cancelled check gave way to

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:40:00.000000
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMMARY = re.compile(r"^cancelled before it started: revision (\d+) superseded it$")


def upgrade() -> None:
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
    # Checks cancelled by supersession before the column existed say so in their summary.
    checks = sa.table(
        "checks",
        sa.column("id", sa.String),
        sa.column("state", sa.String),
        sa.column("summary", sa.Text),
        sa.column("superseded_by", sa.Integer),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(checks.c.id, checks.c.summary).where(checks.c.state == "cancelled")
    )
    for check_id, summary in rows.fetchall():
        found = _SUMMARY.match(summary or "")
        if found:
            bind.execute(
                checks.update()
                .where(checks.c.id == check_id)
                .values(superseded_by=int(found.group(1)))
            )


def downgrade() -> None:
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.drop_column("superseded_by")
