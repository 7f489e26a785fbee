"""Indexes for the job queries as the table grows (100,000 rows and more).

Every list of a user's jobs (`list_jobs`: newest first, by `created_at` then `id`, optionally by
`status` or `project_id`) reads one index in order and stops at its page; a claim
(`claim_job`: the oldest `requested` job) reads the first entry of `(status, created_at, id)`.
The deployment columns stay unindexed: SQLite cannot drop an indexed column, and tests (and
operators) rebuild a pre-deployment database by dropping them.
The old two-column indexes (`(status, created_at)`, `(owner_id, created_at)`, `project_id`) are
replaced by their wider forms. Only indexes change: every row is kept.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEW = {
    "ix_jobs_status_created_id": ["status", "created_at", "id"],
    "ix_jobs_owner_created_id": ["owner_id", "created_at", "id"],
    "ix_jobs_owner_status_created_id": ["owner_id", "status", "created_at", "id"],
    "ix_jobs_owner_project_created_id": ["owner_id", "project_id", "created_at", "id"],
}
OLD = {
    "ix_jobs_status_created": ["status", "created_at"],
    "ix_jobs_owner_created": ["owner_id", "created_at"],
    "ix_jobs_project_id": ["project_id"],
}


def _swap(create: dict[str, list[str]], drop: dict[str, list[str]]) -> None:
    """Create the indexes of `create` the table lacks, then drop those of `drop` it has."""
    have = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("jobs")}
    for name, columns in create.items():
        if name not in have:
            op.create_index(name, "jobs", columns)
    for name in drop:
        if name in have:
            op.drop_index(name, table_name="jobs")


def upgrade() -> None:
    _swap(NEW, OLD)


def downgrade() -> None:
    _swap(OLD, NEW)
