"""reviews: threads, verdicts, and the approvals a project requires

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hwrepo.adapters.db.orm import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("required_approvals", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "review_threads",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE")),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("anchor_kind", sa.String(20), nullable=False),
        sa.Column("check_kind", sa.String(50), nullable=True),
        sa.Column("check_name", sa.String(500), nullable=True),
        sa.Column("identity", sa.String(100), nullable=True),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
    )
    op.create_index("ix_review_threads_revision", "review_threads", ["project_id", "revision"])
    op.create_table(
        "review_verdicts",
        sa.Column(
            "project_id",
            sa.String(36),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("revision", sa.Integer(), primary_key=True),
        sa.Column("reviewer", sa.String(100), primary_key=True),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_verdicts")
    op.drop_index("ix_review_threads_revision", "review_threads")
    op.drop_table("review_threads")
    op.drop_column("projects", "required_approvals")
