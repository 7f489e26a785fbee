"""The store's tables (SQLAlchemy 2 ORM models) and their column types.

The models are what the queries use; the database's shape is made by the migrations in
`migrations/versions/` (`migrate.py`), and a test checks that both agree. A change here
needs a migration beside it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from felix_train.jobs import JobStatus

# -- column types -------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONType = JSON().with_variant(JSONB(), "postgresql")

JobStatusType = SAEnum(
    JobStatus,
    name="job_status",
    native_enum=False,
    length=16,
    values_callable=lambda enum: [m.value for m in enum],
    validate_strings=True,
)


# -- tables -------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class User(Base):
    """An API user. `key_hash` is the sha256 of the API key; the key itself is shown once."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """A user's dataset: its name as the user sees it, its state and the registry's manifest."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_datasets_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Job(Base):
    """A training job: its spec, lifecycle status, who runs it (`worker_id`, `heartbeat_at`) and who serves it.

    The deployment columns came after the first release; migration `0002` adds them to older
    databases (they are nullable or have a server default). The indexes are those of the queries
    (`jobs.py`; migration `0003`): a user's list, with or without a status or
    project filter, reads one index in page order; a claim reads the first `requested` entry.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created_id", "status", "created_at", "id"),
        Index("ix_jobs_owner_created_id", "owner_id", "created_at", "id"),
        Index("ix_jobs_owner_status_created_id", "owner_id", "status", "created_at", "id"),
        Index("ix_jobs_owner_project_created_id", "owner_id", "project_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    spec: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[JobStatus] = mapped_column(JobStatusType, default=JobStatus.REQUESTED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    progress: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deploy_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The user asked for the model to be served (`POST .../deploy`); cleared by undeploy or a dead process."""
    deployment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """Set when a worker claims the deployment; fences that worker's writes (None: no worker serves it)."""
    serving_worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    serving_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    serving_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The loopback port of the inference process; set once it answered its health check (`deployed`)."""
    serving_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RateHit(Base):
    """One counted request for a rate limit (pruned once outside the window)."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_user_key_at", "user_id", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
