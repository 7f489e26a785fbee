"""The job store: users, datasets and jobs in SQL (SQLAlchemy 2 ORM).

One code path for two databases:

- SQLite, the embedded default, at `$FELIX_HOME/felix.db` (WAL, busy timeout; every
  write transaction starts with `BEGIN IMMEDIATE`, so two processes never deadlock on
  a lock upgrade). A worker claims a job with one conditional `UPDATE ... RETURNING`.
- PostgreSQL when many machines share the queue: `FELIX_DATABASE_URL=postgresql+psycopg://...`.
  A worker claims a job with `SELECT ... FOR UPDATE SKIP LOCKED`.

Deployments (`deployed`, DESIGN.md's sixth status) live on the job's row: `deploy_requested` is what
the user asked for; `deployment_id`, `serving_worker`, `serving_pid`, `serving_port` and
`serving_heartbeat_at` say which worker's inference process serves it. A worker claims a requested
deployment (`claim_deployment`), and every later write of that worker is fenced by the
`deployment_id` it got, so an undeploy, a delete or a recovery by another worker always wins.

The store has no migrations: missing tables are created, and columns added to a table after it
was created (nullable, or with a server default, like the deployment fields) are added in place.

API keys are stored as sha256 hashes, never in plain text. The store raises domain
errors (`JobNotFound`, `DatasetNotFound`, `Conflict`, ...), never HTTP ones: the API maps
them once. Every function takes keyword arguments, and every read of a user's
resource is scoped by `owner_id`, so isolation is a property of the store.

`felix-train users add NAME` (`users_main`) creates a user and prints its API key once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    false,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeDecorator

from felix_train.errors import FelixError, JobNotFound
from felix_train.jobs import JOB_ID_PATTERN, JobStatus, felix_home

DATABASE_URL_ENV = "FELIX_DATABASE_URL"
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
API_KEY_PREFIX = "felix_"

_USER_NAME_RE = re.compile(USER_NAME_PATTERN)
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


# -- errors -------------------------------------------------------------------------------------


class StoreError(FelixError):
    """Base class of the store's domain errors."""


class NotFound(StoreError):
    """A resource does not exist (or belongs to another user: the same answer, on purpose)."""


class DatasetNotFound(NotFound):
    """No dataset of that name for this user."""


class UserNotFound(NotFound):
    """No user of that name."""


class Conflict(StoreError):
    """The resource exists but its state forbids the operation (a running job cannot be deleted, ...)."""


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

    The deployment columns came after the first release; `Store.create_all` adds them to older
    databases (they are nullable or have a server default).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
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


# -- helpers ------------------------------------------------------------------------------------


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex}"


def default_database_url(home: str | os.PathLike | None = None) -> str:
    """`FELIX_DATABASE_URL`, else SQLite at `$FELIX_HOME/felix.db`."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{felix_home(home) / 'felix.db'}"


_NO_DEPLOYMENT: dict[str, Any] = {"deployment_id": None, "serving_worker": None, "serving_pid": None,
                                  "serving_port": None, "serving_heartbeat_at": None}


@dataclass(frozen=True)
class ClaimedDeployment:
    """What a worker needs to serve a job: the job and the `deployment_id` that fences its writes."""

    job_id: str
    deployment_id: str
    owner_id: int
    spec: dict


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run a claimed job."""

    id: str
    owner_id: int
    spec: dict
    attempts: int
    stop_requested: bool


# -- the store ----------------------------------------------------------------------------------


class Store:
    """Users, datasets and jobs over one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, url: str | None = None, *, home: str | os.PathLike | None = None, create: bool = True,
                 echo: bool = False):
        self.url = url or default_database_url(home)
        self.engine = _make_engine(self.url, echo=echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # Reads begin deferred; writes begin IMMEDIATE on SQLite (see _make_engine).
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(felix_write=True), expire_on_commit=False)
        if create:
            self.create_all()

    def create_all(self) -> None:
        """Create the tables that are missing (one process at a time: API and workers may start together)."""
        with self.engine.execution_options(felix_write=True).begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7215)"))  # SQLite: BEGIN IMMEDIATE already
            Base.metadata.create_all(conn)
            _add_missing_columns(conn)

    def drop_all(self) -> None:
        Base.metadata.drop_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    # -- users ----------------------------------------------------------------------------------
    def create_user(self, *, name: str) -> tuple[User, str]:
        """A new user and its API key (returned once; only its hash is stored).

        Raises:
            ValueError: the name is invalid.
            Conflict: a user of that name exists.
        """
        if not isinstance(name, str) or not _USER_NAME_RE.match(name):
            raise ValueError(f"user name must match {USER_NAME_PATTERN}, got {name!r}")
        api_key = new_api_key()
        with self.writing() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"user {name!r} exists; `felix-train users rotate {name}` gives it a new key")
            user = User(name=name, key_hash=hash_api_key(api_key), created_at=utcnow())
            s.add(user)
        return user, api_key

    def rotate_key(self, *, name: str) -> str:
        """A new API key for `name`; the old one stops working. Raises UserNotFound."""
        api_key = new_api_key()
        with self.writing() as s:
            done = s.execute(update(User).where(User.name == name).values(key_hash=hash_api_key(api_key)))
            if done.rowcount == 0:
                raise UserNotFound(f"no user {name!r}; `felix-train users add {name}` creates it")
        return api_key

    def user_by_api_key(self, *, api_key: str) -> User | None:
        with self.reading() as s:
            return s.scalar(select(User).where(User.key_hash == hash_api_key(api_key)))

    def list_users(self) -> list[User]:
        with self.reading() as s:
            return list(s.scalars(select(User).order_by(User.id)))

    # -- datasets -------------------------------------------------------------------------------
    def create_dataset(self, *, owner_id: int, name: str, state: str, manifest: dict | None,
                       replace: bool = False) -> Dataset:
        """Record a user's dataset. Raises Conflict when it exists and `replace` is False."""
        now = utcnow()
        with self.writing() as s:
            row = s.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
            if row is not None and not replace:
                raise Conflict(f"dataset {name!r} exists; delete it first or upload under another name")
            if row is None:
                row = Dataset(owner_id=owner_id, name=name, created_at=now)
                s.add(row)
            row.state, row.manifest, row.updated_at = state, manifest, now
        return row

    def update_dataset(self, *, owner_id: int, name: str, state: str, manifest: dict | None) -> None:
        with self.writing() as s:
            s.execute(update(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name)
                      .values(state=state, manifest=manifest, updated_at=utcnow()))

    def get_dataset(self, *, owner_id: int, name: str) -> Dataset:
        with self.reading() as s:
            row = s.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
        if row is None:
            raise DatasetNotFound(f"no dataset named {name!r}; `GET /felix/datasets` lists yours")
        return row

    def list_datasets(self, *, owner_id: int) -> list[Dataset]:
        with self.reading() as s:
            return list(s.scalars(select(Dataset).where(Dataset.owner_id == owner_id).order_by(Dataset.name)))

    def datasets_in_state(self, *, state: str) -> list[Dataset]:
        with self.reading() as s:
            return list(s.scalars(select(Dataset).where(Dataset.state == state)))

    def delete_dataset(self, *, owner_id: int, name: str) -> None:
        with self.writing() as s:
            done = s.execute(delete(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
        if done.rowcount == 0:
            raise DatasetNotFound(f"no dataset named {name!r}; `GET /felix/datasets` lists yours")

    # -- jobs: the API side ---------------------------------------------------------------------
    def create_job(self, *, owner_id: int, name: str, spec: dict, project_id: str | None = None,
                   job_id: str | None = None) -> Job:
        """A new job in `requested`."""
        now = utcnow()
        job = Job(id=job_id or new_job_id(), owner_id=owner_id, name=name, project_id=project_id, spec=spec,
                  status=JobStatus.REQUESTED, created_at=now, updated_at=now, stop_requested=False, attempts=0,
                  progress={"step": 0, "total_steps": None, "epoch": 0, "eta_s": None})
        with self.writing() as s:
            s.add(job)
        return job

    def get_job(self, *, job_id: str, owner_id: int | None = None) -> Job:
        """The job; with `owner_id`, only if it is that user's (another user's job is not found).

        Raises:
            JobNotFound: no such job for this user (or a malformed id).
        """
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        with self.reading() as s:
            query = select(Job).where(Job.id == job_id)
            if owner_id is not None:
                query = query.where(Job.owner_id == owner_id)
            job = s.scalar(query)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; `GET /felix/training-jobs` lists yours")
        return job

    def list_jobs(self, *, owner_id: int, status: JobStatus | Collection[JobStatus] | None = None,
                  project_id: str | None = None, limit: int = 200, offset: int = 0) -> tuple[list[Job], int]:
        """A page of the user's jobs, newest first, and the total count matching the filters (`status`: one or several)."""
        where = [Job.owner_id == owner_id]
        if isinstance(status, JobStatus):
            where.append(Job.status == status)
        elif status is not None:
            where.append(Job.status.in_(list(status)))
        if project_id is not None:
            where.append(Job.project_id == project_id)
        with self.reading() as s:
            count = s.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            rows = list(s.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc())
                                  .limit(limit).offset(offset)))
        return rows, count

    def count_jobs(self, *, status: JobStatus | None = None) -> int:
        """Jobs in `status` (every job when None), all users together."""
        query = select(func.count()).select_from(Job)
        if status is not None:
            query = query.where(Job.status == status)
        with self.reading() as s:
            return s.scalar(query) or 0

    def job_owner(self, *, job_id: str) -> int | None:
        with self.reading() as s:
            return s.scalar(select(Job.owner_id).where(Job.id == job_id))

    def request_stop(self, *, job_id: str, owner_id: int) -> Job:
        """Flag a `running` job for a graceful stop (the worker forwards it to the job folder).

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is not `running`.
        """
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.owner_id == owner_id,
                                               Job.status == JobStatus.RUNNING)
                             .values(stop_requested=True, updated_at=utcnow()))
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        if done.rowcount == 0:
            raise Conflict(f"job {job_id} is `{job.status.value}`; only a `running` job can be stopped")
        return job

    def delete_job(self, *, job_id: str, owner_id: int) -> Job:
        """Delete a job's row unless it is `running` (stop it first). Returns the deleted job.

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is `running`.
        """
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        with self.writing() as s:
            done = s.execute(delete(Job).where(Job.id == job_id, Job.owner_id == owner_id,
                                               Job.status != JobStatus.RUNNING))
        if done.rowcount == 0:
            job = self.get_job(job_id=job_id, owner_id=owner_id)
            raise Conflict(f"job {job_id} is `{job.status.value}`; stop it first "
                           f"(`POST /felix/training-jobs/{job_id}/stop`), then delete it once it is `cancelled`")
        return job

    def set_status(self, *, job_id: str, status: JobStatus, **fields: Any) -> None:
        """Set a job's status and fields unconditionally (operators and tests; workers use finish_job)."""
        with self.writing() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status=status, updated_at=utcnow(), **fields))

    # -- deployments: the API side --------------------------------------------------------------
    def request_deploy(self, *, job_id: str, owner_id: int | None) -> Job:
        """Ask the workers to serve a `complete` job (idempotent while the deployment is pending).

        The job stays `complete` with `deploy_requested` until a worker's inference process
        answers its health check; then it is `deployed`. `owner_id=None` is an operator (the CLI).

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is not `complete` (already `deployed`, or not trained yet).
        """
        where = [Job.id == job_id, Job.status == JobStatus.COMPLETE, Job.deploy_requested.is_(False)]
        if owner_id is not None:
            where.append(Job.owner_id == owner_id)
        self.get_job(job_id=job_id, owner_id=owner_id)  # JobNotFound first (and for malformed ids)
        with self.writing() as s:
            s.execute(update(Job).where(*where).values(deploy_requested=True, updated_at=utcnow()))
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        if job.status == JobStatus.DEPLOYED:
            raise Conflict(f"job {job_id} is already `deployed`; `POST /felix/trained-models/{job_id}/predict` "
                           "uses it, `POST /felix/training-jobs/{job_id}/undeploy` stops it")
        if job.status != JobStatus.COMPLETE:
            raise Conflict(f"job {job_id} is `{job.status.value}`; only a `complete` job can be deployed")
        return job

    def request_undeploy(self, *, job_id: str, owner_id: int | None) -> Job:
        """Stop serving a job: it is `complete` again at once, and its worker stops the inference process.

        Also cancels a deployment that is still pending.

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is neither `deployed` nor waiting to be.
        """
        where = [Job.id == job_id, Job.deploy_requested.is_(True),
                 Job.status.in_([JobStatus.COMPLETE, JobStatus.DEPLOYED])]
        if owner_id is not None:
            where.append(Job.owner_id == owner_id)
        self.get_job(job_id=job_id, owner_id=owner_id)
        with self.writing() as s:
            done = s.execute(update(Job).where(*where).values(status=JobStatus.COMPLETE, deploy_requested=False,
                                                               updated_at=utcnow(), **_NO_DEPLOYMENT))
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        if done.rowcount == 0:
            raise Conflict(f"job {job_id} is `{job.status.value}` and not deployed; nothing to undeploy")
        return job

    # -- jobs: the worker side ------------------------------------------------------------------
    def claim_job(self, *, worker_id: str) -> ClaimedJob | None:
        """Atomically move the oldest `requested` job to `running` for `worker_id`; None when the queue is empty.

        PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` (workers never wait on each other's rows).
        SQLite: one conditional `UPDATE ... WHERE status = 'requested' RETURNING` in a `BEGIN IMMEDIATE`
        transaction.
        """
        with self.reading() as s:  # an idle poll takes no write lock
            if s.scalar(select(Job.id).where(Job.status == JobStatus.REQUESTED).limit(1)) is None:
                return None
        now = utcnow()
        values = dict(status=JobStatus.RUNNING, worker_id=worker_id, heartbeat_at=now, updated_at=now,
                      attempts=Job.attempts + 1, finished_at=None)
        with self.writing() as s:
            if self.is_sqlite:
                oldest = (select(Job.id).where(Job.status == JobStatus.REQUESTED)
                          .order_by(Job.created_at, Job.id).limit(1).scalar_subquery())
                job_id = s.scalar(update(Job).where(Job.id == oldest, Job.status == JobStatus.REQUESTED)
                                  .values(**values).returning(Job.id))
            else:
                job_id = s.scalar(select(Job.id).where(Job.status == JobStatus.REQUESTED)
                                  .order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True))
                if job_id is not None:
                    s.execute(update(Job).where(Job.id == job_id).values(**values))
            if job_id is None:
                return None
            row = s.execute(select(Job.id, Job.owner_id, Job.spec, Job.attempts, Job.stop_requested)
                            .where(Job.id == job_id)).one()
        return ClaimedJob(id=row.id, owner_id=row.owner_id, spec=row.spec, attempts=row.attempts,
                          stop_requested=row.stop_requested)

    def heartbeat(self, *, worker_id: str, job_ids: list[str], touch: bool = True) -> dict[str, bool]:
        """Refresh the heartbeat of the worker's running jobs (only read them when `touch` is False).

        Returns `{job_id: stop_requested}` for the jobs the worker still owns; a job missing from it
        was requeued (the worker was presumed dead) or deleted, and its run must end at once.
        """
        if not job_ids:
            return {}
        owned = [Job.id.in_(job_ids), Job.worker_id == worker_id, Job.status == JobStatus.RUNNING]
        with (self.writing() if touch else self.reading()) as s:
            if touch:
                s.execute(update(Job).where(*owned).values(heartbeat_at=utcnow()))
            rows = s.execute(select(Job.id, Job.stop_requested).where(*owned)).all()
        return {r.id: bool(r.stop_requested) for r in rows}

    def update_progress(self, *, job_id: str, worker_id: str, progress: dict | None,
                        started_at: datetime | None = None) -> bool:
        """Mirror a running job's progress from its status.json; False when the worker no longer owns it."""
        values: dict[str, Any] = {"progress": progress, "heartbeat_at": utcnow()}
        if started_at is not None:
            values["started_at"] = started_at
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                                               Job.status == JobStatus.RUNNING).values(**values))
        return done.rowcount == 1

    def finish_job(self, *, job_id: str, worker_id: str, status: JobStatus, error: dict | None = None,
                   metrics: dict | None = None, progress: dict | None = None,
                   started_at: datetime | None = None, finished_at: datetime | None = None) -> bool:
        """Record the end of a run by `worker_id`: a final status, or `requested` to requeue it (preempted).

        Returns False when the worker no longer owns the job (it was requeued or deleted meanwhile).
        """
        values: dict[str, Any] = {"status": status, "updated_at": utcnow(), "error": error,
                                  "metrics": metrics if status == JobStatus.COMPLETE else None}
        if progress is not None:
            values["progress"] = progress
        if started_at is not None:
            values["started_at"] = started_at
        if status == JobStatus.REQUESTED:
            values.update(worker_id=None, heartbeat_at=None, finished_at=None)
        else:
            values.update(finished_at=finished_at or utcnow(), heartbeat_at=None, stop_requested=False)
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                                               Job.status == JobStatus.RUNNING).values(**values))
        return done.rowcount == 1

    def requeue_stale(self, *, timeout_s: float, max_attempts: int = 3) -> dict[str, JobStatus]:
        """Recover `running` jobs whose worker stopped heartbeating for `timeout_s`.

        A job goes back to `requested` (the next run resumes from its last checkpoint), or to
        `cancelled` when a stop was requested, or to `failed` after `max_attempts` runs.
        Returns `{job_id: new status}`.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=timeout_s)
        out: dict[str, JobStatus] = {}
        stale = [Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff]
        with self.writing() as s:
            rows = s.execute(select(Job.id, Job.attempts, Job.stop_requested, Job.worker_id).where(*stale)
                             .with_for_update(skip_locked=True)).all()
            for r in rows:
                if r.stop_requested:
                    new, extra = JobStatus.CANCELLED, {"finished_at": now, "stop_requested": False}
                elif r.attempts >= max_attempts:
                    new, extra = JobStatus.FAILED, {
                        "finished_at": now,
                        "error": {"type": "WorkerLost", "message": f"the job's worker stopped heartbeating "
                                  f"{r.attempts} time(s) (last: {r.worker_id}); giving up after {max_attempts} "
                                  "attempts: check the workers' logs and memory, then submit it again",
                                  "where": "", "errors": []}}
                else:
                    new, extra = JobStatus.REQUESTED, {}
                done = s.execute(update(Job).where(Job.id == r.id, *stale).values(
                    status=new, worker_id=None, heartbeat_at=None, updated_at=now, **extra))
                if done.rowcount == 1:
                    out[r.id] = new
        return out

    # -- deployments: the worker side -----------------------------------------------------------
    def claim_deployment(self, *, worker_id: str) -> ClaimedDeployment | None:
        """Take the oldest pending deployment (`complete`, `deploy_requested`, no worker) for `worker_id`.

        The job stays `complete` until `mark_deployed`. Returns None when nothing waits.
        """
        pending = [Job.status == JobStatus.COMPLETE, Job.deploy_requested.is_(True), Job.deployment_id.is_(None)]
        with self.reading() as s:
            if s.scalar(select(Job.id).where(*pending).limit(1)) is None:
                return None
        now = utcnow()
        deployment_id = str(uuid.uuid4())
        values = {"deployment_id": deployment_id, "serving_worker": worker_id, "serving_heartbeat_at": now,
                  "serving_pid": None, "serving_port": None, "updated_at": now}
        with self.writing() as s:
            if self.is_sqlite:
                oldest = select(Job.id).where(*pending).order_by(Job.updated_at, Job.id).limit(1).scalar_subquery()
                job_id = s.scalar(update(Job).where(Job.id == oldest, *pending).values(**values).returning(Job.id))
            else:
                job_id = s.scalar(select(Job.id).where(*pending).order_by(Job.updated_at, Job.id).limit(1)
                                  .with_for_update(skip_locked=True))
                if job_id is not None:
                    s.execute(update(Job).where(Job.id == job_id).values(**values))
            if job_id is None:
                return None
            row = s.execute(select(Job.owner_id, Job.spec).where(Job.id == job_id)).one()
        return ClaimedDeployment(job_id=job_id, deployment_id=deployment_id, owner_id=row.owner_id, spec=row.spec)

    def set_serving_pid(self, *, job_id: str, deployment_id: str, pid: int) -> bool:
        """Record the inference process of a claimed deployment; False when it is no longer this deployment."""
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id)
                             .values(serving_pid=pid, serving_heartbeat_at=utcnow()))
        return done.rowcount == 1

    def mark_deployed(self, *, job_id: str, deployment_id: str, port: int, pid: int) -> bool:
        """The inference process answered its health check: the job is `deployed` on `port`.

        Returns False when the deployment was withdrawn meanwhile (undeployed, deleted, recovered).
        """
        now = utcnow()
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id,
                                               Job.deploy_requested.is_(True), Job.status == JobStatus.COMPLETE)
                             .values(status=JobStatus.DEPLOYED, serving_port=port, serving_pid=pid,
                                     serving_heartbeat_at=now, updated_at=now))
        return done.rowcount == 1

    def deployment_heartbeat(self, *, deployments: dict[str, str], touch: bool = True) -> set[str]:
        """Refresh a worker's deployments (`{job_id: deployment_id}`); only read them when `touch` is False.

        Returns the job ids still served under those deployment ids. A job missing from it was
        undeployed, deleted or recovered by another worker: its process must stop.
        """
        if not deployments:
            return set()
        owned = [Job.id.in_(list(deployments)), Job.deployment_id.in_(list(deployments.values()))]
        with (self.writing() if touch else self.reading()) as s:
            if touch:
                s.execute(update(Job).where(*owned).values(serving_heartbeat_at=utcnow()))
            rows = s.execute(select(Job.id, Job.deployment_id).where(*owned)).all()
        return {r.id for r in rows if deployments.get(r.id) == r.deployment_id}

    def end_deployment(self, *, job_id: str, deployment_id: str, keep_request: bool = False) -> bool:
        """The deployment's process is gone: the job is `complete` again.

        `keep_request=True` (the worker is shutting down) leaves `deploy_requested` set, so another
        worker serves it; False (the process died or never became healthy) clears it.
        Returns False when the deployment was no longer this one.
        """
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id,
                                               Job.status.in_([JobStatus.COMPLETE, JobStatus.DEPLOYED]))
                             .values(status=JobStatus.COMPLETE, deploy_requested=keep_request, updated_at=utcnow(),
                                     **_NO_DEPLOYMENT))
        return done.rowcount == 1

    def recover_stale_deployments(self, *, timeout_s: float) -> dict[str, str | None]:
        """Hand back deployments whose worker stopped heartbeating for `timeout_s` (it died).

        The job is `complete` again with `deploy_requested` kept, so a live worker serves it anew.
        Returns `{job_id: the worker that was serving it}`.
        """
        now = utcnow()
        stale = [Job.deployment_id.is_not(None), Job.serving_heartbeat_at < now - timedelta(seconds=timeout_s)]
        out: dict[str, str | None] = {}
        with self.writing() as s:
            rows = s.execute(select(Job.id, Job.serving_worker, Job.status).where(*stale)
                             .with_for_update(skip_locked=True)).all()
            for r in rows:
                status = JobStatus.COMPLETE if r.status == JobStatus.DEPLOYED else r.status
                done = s.execute(update(Job).where(Job.id == r.id, *stale)
                                 .values(status=status, updated_at=now, **_NO_DEPLOYMENT))
                if done.rowcount == 1:
                    out[r.id] = r.serving_worker
        return out

    # -- rate limits ----------------------------------------------------------------------------
    def hit_rate_limit(self, *, user_id: int, key: str, limit: int, window_s: float,
                       now: float | None = None) -> float | None:
        """Count one request of `user_id` against `limit` per `window_s` seconds (a sliding window).

        Returns None when the request is allowed (and counted), else the seconds until one is
        (the refused request is not counted). Shared by every API process using the database.
        """
        now = time.time() if now is None else now
        with self.writing() as s:
            # serialise a user's hits (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)
            s.execute(select(User.id).where(User.id == user_id).with_for_update())
            s.execute(delete(RateHit).where(RateHit.user_id == user_id, RateHit.key == key,
                                            RateHit.at <= now - window_s))
            times = list(s.scalars(select(RateHit.at).where(RateHit.user_id == user_id, RateHit.key == key)
                                   .order_by(RateHit.at)))
            if len(times) >= limit:
                return max(times[len(times) - limit] + window_s - now, 0.001)
            s.add(RateHit(user_id=user_id, key=key, at=now))
        return None


def _add_missing_columns(conn) -> list[str]:  # noqa: ANN001
    """Add the model's columns that an existing table lacks (the store's only kind of upgrade).

    Such a column must be nullable or have a server default (the deployment fields are): the
    rows already there get NULL or the default. Returns `table.column` for each column added.

    Raises:
        RuntimeError: a missing column that cannot be added in place (NOT NULL without a default).
    """
    inspector = inspect(conn)
    added = []
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"table {table.name!r} lacks column {column.name!r}, which is NOT NULL without a "
                                   "server default and cannot be added in place; give it a server_default")
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{column.name}")
    return added


def _make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            # A write transaction takes the write lock up front: no read-to-write upgrade, which SQLite
            # cannot wait for (it fails at once with "database is locked").
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("felix_write") else "BEGIN")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


# -- `felix-train users` -------------------------------------------------------------------------


def users_main(argv: list[str] | None = None) -> int:
    """`felix-train users add NAME | rotate NAME | list`."""
    parser = argparse.ArgumentParser(prog="felix-train users", description="Manage API users.")
    parser.add_argument("--home", default=None, help="$FELIX_HOME (default ~/.felix)")
    parser.add_argument("--database-url", default=None,
                        help=f"SQLAlchemy URL (default ${DATABASE_URL_ENV}, else SQLite at $FELIX_HOME/felix.db)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("add", help="create a user and print its API key (shown once)").add_argument("name")
    sub.add_parser("rotate", help="give a user a new API key (the old one stops working)").add_argument("name")
    sub.add_parser("list", help="list users")
    args = parser.parse_args(argv)

    store = Store(args.database_url, home=args.home)
    try:
        if args.action == "add":
            user, key = store.create_user(name=args.name)
            print(f"user {user.name!r} created (id {user.id}); its API key, shown only now:", file=sys.stderr)
            print(key)
        elif args.action == "rotate":
            print(store.rotate_key(name=args.name))
        else:
            for user in store.list_users():
                print(f"{user.id}\t{user.name}\t{user.created_at.isoformat(timespec='seconds')}")
        return 0
    except (ValueError, StoreError) as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        store.close()
