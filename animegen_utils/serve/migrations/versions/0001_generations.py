"""Create the generations table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.String(32), primary_key=True),
        # Naive UTC everywhere: SQLite has no time zones, and the cursor compares these.
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("emotion", sa.String(32), nullable=True),
        sa.Column("style", sa.String(32), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("scheduler", sa.String(64), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("api_key_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("storage_key", name="uq_generations_storage_key"),
    )
    # Newest-first keyset pagination, with and without a filter.
    op.create_index("ix_generations_created_at_id", "generations", ["created_at", "id"])
    op.create_index("ix_generations_emotion", "generations", ["emotion", "created_at", "id"])
    op.create_index("ix_generations_style", "generations", ["style", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("generations")
