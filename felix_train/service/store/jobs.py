"""The store's queries for jobs: the API side (create, list, stop, delete) and the worker side (claim, heartbeat, finish, recover).

A worker claims a job with one conditional `UPDATE ... RETURNING` (on PostgreSQL its oldest
`requested` row is read `FOR UPDATE SKIP LOCKED`); every later write of that worker is fenced
by its `worker_id`, so a requeue by another worker always wins. A list page is one index range
read at any depth by cursor (`cursor.py`); an offset reads only the index up to its page.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal, select, tuple_, update

from felix_train.errors import JobNotFound
from felix_train.jobs import JOB_ID_PATTERN, ErrorCode, JobStatus, new_job_id
from felix_train.service.store.cursor import JobCursor
from felix_train.service.store.errors import Conflict
from felix_train.service.store.schema import Job, UTCDateTime, utcnow
from felix_train.service.store.sessions import StoreBase
from felix_train.service.store.spec_cache import SpecCache

__all__ = ["LIST_COLUMNS", "ClaimedJob", "JobPage", "JobQueries", "JobRow", "RunErrorCode", "new_job_id"]

_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


RunErrorCode = ErrorCode
"""The codes a worker records when a run ends without an error of its own: `felix_train.jobs.ErrorCode`
(`out_of_memory`, `killed`, `preempted_too_often`, `worker_lost`, `run_crashed`, `run_not_started`)."""


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run a claimed job."""

    id: str
    owner_id: int
    spec: dict
    attempts: int
    stop_requested: bool


LIST_COLUMNS = (Job.id, Job.name, Job.status, Job.project_id, Job.progress, Job.error, Job.metrics,
                Job.stop_requested, Job.deploy_requested, Job.attempts, Job.created_at, Job.started_at,
                Job.finished_at)
"""What a job list shows of each job besides its spec: `page_jobs(light=True)` reads these as plain rows, with
no ORM object per row, and the spec through the `SpecCache`."""


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as a list shows it (`LIST_COLUMNS` and the spec, attributes named as `Job`'s). `spec` is shared with
    the store's cache: read it, never change it."""

    id: str
    name: str
    status: JobStatus
    project_id: str | None
    progress: dict | None
    error: dict | None
    metrics: dict | None
    stop_requested: bool
    deploy_requested: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict


@dataclass(frozen=True)
class JobPage:
    """One page of a user's jobs: its rows, the count over all pages, and where the next page starts (None: last)."""

    rows: list  # `Job` objects, or `JobRow`s (`light`)
    count: int
    next_cursor: JobCursor | None


class JobQueries(StoreBase):
    """Jobs: every read of a user's job is scoped by `owner_id`; every worker write by `worker_id`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.spec_cache = SpecCache()

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
        page = self.page_jobs(owner_id=owner_id, status=status, project_id=project_id, limit=limit, offset=offset)
        return page.rows, page.count

    def page_jobs(self, *, owner_id: int, status: JobStatus | Collection[JobStatus] | None = None,
                  project_id: str | None = None, limit: int = 200, offset: int = 0,
                  after: JobCursor | None = None, light: bool = False) -> JobPage:
        """A page of the user's jobs, newest first (`created_at`, then `id`), the count matching the filters,
        and the cursor of the next page.

        `after` (keyset pagination) starts the page strictly after a cursor's position: one index range
        read at any depth. `offset` skips rows: its ids come from the index alone (an index-only
        scan on PostgreSQL, a covering one on SQLite), then only the page's rows are read.
        `light`: `JobRow`s instead of `Job` objects: no ORM object per row, and each spec decoded once per
        process (`spec_cache.py`), the most of a 200-row page's time.
        """
        where = [Job.owner_id == owner_id]
        if isinstance(status, JobStatus):
            where.append(Job.status == status)
        elif status is not None:
            where.append(Job.status.in_(list(status)))
        if project_id is not None:
            where.append(Job.project_id == project_id)
        at = list(where)
        if after is not None:
            at.append(tuple_(Job.created_at, Job.id) < tuple_(literal(after.created_at, UTCDateTime),
                                                               literal(after.id, Job.id.type)))
        order = (Job.created_at.desc(), Job.id.desc())
        what = select(*LIST_COLUMNS) if light else select(Job)
        with self.reading() as s:
            count = s.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            if offset:
                ids = select(Job.id).where(*at).order_by(*order).limit(limit + 1).offset(offset).subquery()
                query = what.join(ids, Job.id == ids.c.id).order_by(*order)
            else:
                query = what.where(*at).order_by(*order).limit(limit + 1)
            rows = self._with_specs(s, s.execute(query).all()) if light else list(s.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage(rows=rows, count=count, next_cursor=JobCursor.of(rows[-1]) if more else None)

    def _with_specs(self, session, rows: list) -> list[JobRow]:
        """`JobRow`s of `LIST_COLUMNS` rows, their specs from the cache, or read (and cached) when missing."""
        specs = self.spec_cache.get_many([(r.id, r.created_at) for r in rows])
        missing = [r.id for r in rows if (r.id, r.created_at) not in specs]
        if missing:
            read = {(r.id, r.created_at): r.spec for r in
                    session.execute(select(Job.id, Job.created_at, Job.spec).where(Job.id.in_(missing)))}
            self.spec_cache.put_many(read)
            specs.update(read)
        return [JobRow(*r, specs[(r.id, r.created_at)]) for r in rows]  # LIST_COLUMNS are JobRow's fields, in order

    def count_jobs(self, *, status: JobStatus | None = None) -> int:
        """Jobs in `status` (every job when None), all users together."""
        query = select(func.count()).select_from(Job)
        if status is not None:
            query = query.where(Job.status == status)
        with self.reading() as s:
            return s.scalar(query) or 0

    def queue_positions(self, *, job_ids: Collection[str]) -> dict[str, int]:
        """For each of `job_ids` that is `requested`: how many `requested` jobs (of every user) are ahead of it
        in the claim order (oldest first), 0 = the next one a worker claims. One query."""
        ids = list(job_ids)
        if not ids:
            return {}
        ahead = (func.row_number().over(order_by=(Job.created_at, Job.id)) - 1).label("ahead")
        queue = select(Job.id, ahead).where(Job.status == JobStatus.REQUESTED).subquery()
        with self.reading() as s:
            return {row.id: int(row.ahead) for row in s.execute(select(queue.c.id, queue.c.ahead)
                                                                .where(queue.c.id.in_(ids)))}

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

    # -- jobs: the worker side ------------------------------------------------------------------
    def claim_job(self, *, worker_id: str) -> ClaimedJob | None:
        """Atomically move the oldest `requested` job to `running` for `worker_id`; None when the queue is empty.

        One statement on both databases, `UPDATE ... WHERE id = (the oldest requested) RETURNING` what a
        worker needs: on PostgreSQL the oldest is read `FOR UPDATE SKIP LOCKED` (workers never wait on
        each other's rows); SQLite runs it in a `BEGIN IMMEDIATE` transaction. The oldest is the first
        entry of the `(status, created_at, id)` index: a claim costs the same at any table size.
        """
        with self.reading() as s:  # an idle poll takes no write lock
            if s.scalar(select(Job.id).where(Job.status == JobStatus.REQUESTED).limit(1)) is None:
                return None
        now = utcnow()
        oldest = (select(Job.id).where(Job.status == JobStatus.REQUESTED).order_by(Job.created_at, Job.id).limit(1)
                  .with_for_update(skip_locked=True).scalar_subquery())  # SQLite has no FOR UPDATE: left out
        claim = (update(Job).where(Job.id == oldest, Job.status == JobStatus.REQUESTED)
                 .values(status=JobStatus.RUNNING, worker_id=worker_id, heartbeat_at=now, updated_at=now,
                         attempts=Job.attempts + 1, finished_at=None)
                 .returning(Job.id, Job.owner_id, Job.spec, Job.attempts, Job.stop_requested))
        with self.writing() as s:
            row = s.execute(claim, execution_options={"synchronize_session": False}).one_or_none()
        if row is None:
            return None
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
                        "error": {"code": RunErrorCode.WORKER_LOST.value, "type": "WorkerLost",
                                  "message": f"the job's worker stopped heartbeating {r.attempts} time(s) (last: "
                                  f"{r.worker_id}); giving up after {max_attempts} attempts: check the workers' "
                                  "logs and memory, then submit it again",
                                  "where": "", "errors": [], "attempts": r.attempts}}
                else:
                    new, extra = JobStatus.REQUESTED, {}
                done = s.execute(update(Job).where(Job.id == r.id, *stale).values(
                    status=new, worker_id=None, heartbeat_at=None, updated_at=now, **extra))
                if done.rowcount == 1:
                    out[r.id] = new
        return out

