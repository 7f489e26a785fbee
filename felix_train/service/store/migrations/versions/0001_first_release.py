"""The store's tables as first released: users, datasets, jobs (without the deployment columns), rate_hits.

A database made before Alembic (by the old `Store.create_all`) already has them: a table that
exists is left as it is, and migration 0002 adds what it lacks.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "users" not in have:
        op.create_table(
            "users",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(64), nullable=False, unique=True),
            sa.Column("key_hash", sa.String(64), nullable=False),
            sa.Column("created_at", _time(), nullable=False),
        )
        op.create_index("ix_users_key_hash", "users", ["key_hash"], unique=True)
    if "datasets" not in have:
        op.create_table(
            "datasets",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("manifest", _json(), nullable=True),
            sa.Column("created_at", _time(), nullable=False),
            sa.Column("updated_at", _time(), nullable=False),
            sa.UniqueConstraint("owner_id", "name", name="uq_datasets_owner_name"),
        )
        op.create_index("ix_datasets_owner_id", "datasets", ["owner_id"])
    if "jobs" not in have:
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("project_id", sa.String(128), nullable=True),
            sa.Column("spec", _json(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at", _time(), nullable=False),
            sa.Column("updated_at", _time(), nullable=False),
            sa.Column("started_at", _time(), nullable=True),
            sa.Column("finished_at", _time(), nullable=True),
            sa.Column("progress", _json(), nullable=True),
            sa.Column("error", _json(), nullable=True),
            sa.Column("metrics", _json(), nullable=True),
            sa.Column("worker_id", sa.String(128), nullable=True),
            sa.Column("heartbeat_at", _time(), nullable=True),
            sa.Column("stop_requested", sa.Boolean(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
        )
        op.create_index("ix_jobs_project_id", "jobs", ["project_id"])
        op.create_index("ix_jobs_worker_id", "jobs", ["worker_id"])
        op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
        op.create_index("ix_jobs_owner_created", "jobs", ["owner_id", "created_at"])
    if "rate_hits" not in have:
        op.create_table(
            "rate_hits",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
            sa.Column("key", sa.String(64), nullable=False),
            sa.Column("at", sa.Float(), nullable=False),
        )
        op.create_index("ix_rate_hits_user_key_at", "rate_hits", ["user_id", "key", "at"])


def downgrade() -> None:
    for table in ("rate_hits", "jobs", "datasets", "users"):
        op.drop_table(table)
