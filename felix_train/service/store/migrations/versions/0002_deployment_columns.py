"""The deployment columns on `jobs` (`deploy_requested`, `deployment_id`, `serving_*`).

This was the store's hand-written upgrade before Alembic (`_add_missing_columns`): a database
from before deployments gets the columns (its rows: NULL, and `deploy_requested` false); one
made by the old `create_all` after them already has them, and nothing changes.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [
        sa.Column("deploy_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("serving_worker", sa.String(128), nullable=True),
        sa.Column("serving_pid", sa.Integer(), nullable=True),
        sa.Column("serving_port", sa.Integer(), nullable=True),
        sa.Column("serving_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}
    for column in _columns():
        if column.name not in have:
            op.add_column("jobs", column)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
