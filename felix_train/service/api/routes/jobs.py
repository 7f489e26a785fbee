"""`/felix/training-jobs`: submit, list, read, follow the log, list checkpoints, stop and delete a job.

The download and deploy endpoints of a job live in `routes/downloads.py` and `routes/deployments.py`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import PlainValidator

from felix_train.checkpoints import list_checkpoints
from felix_train.errors import JobNotFound
from felix_train.jobs import JobFolder, JobStatus
from felix_train.service.api.deps import (
    CurrentUser,
    JobId,
    SettingsDep,
    StoreDep,
    UserRegistryDep,
    submission_rate_limit,
)
from felix_train.service.api.schemas import (
    PROJECT_ID_PATTERN,
    CheckpointPublic,
    CheckpointsPublic,
    Message,
    TrainingJobCreate,
    TrainingJobPublic,
    TrainingJobsPublic,
)
from felix_train.service.api.submission import submit_job
from felix_train.service.store import InvalidCursor, JobCursor, Store

router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])

JobSpecBody = Annotated[Any, PlainValidator(lambda v: v, json_schema_input_type=TrainingJobCreate), Body()]
"""The body is documented as `TrainingJobCreate` and validated by `validate_spec` (for its located errors)."""


@router.post("", status_code=201, response_model=TrainingJobPublic, dependencies=[Depends(submission_rate_limit)],
             responses={413: {"description": "The body is over `FELIX_MAX_BODY_BYTES` (1 MiB)."},
                        422: {"description": "Every problem in the spec, located (`loc` starts with `body`); a body "
                                             "that is not JSON names the line and column."},
                        429: {"description": "Over the per-user rate limit; see `Retry-After`."}})
def create_training_job(payload: JobSpecBody, user: CurrentUser, store: StoreDep, settings: SettingsDep,
                        registry: UserRegistryDep) -> TrainingJobPublic:
    """Validate a job spec against the user's datasets and queue the job (`requested`)."""
    job = submit_job(payload=payload, user=user, store=store, settings=settings, registry=registry)
    return TrainingJobPublic.from_job(job, queue_position=store.queue_positions(job_ids=[job.id]).get(job.id))


@router.get("", response_model=TrainingJobsPublic,
            responses={422: {"description": "A bad filter or bound, a damaged `after`, or `after` with `offset` "
                                            "(`loc` names the parameter)."}})
def list_training_jobs(user: CurrentUser, store: StoreDep,
                       status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
                       project_id: Annotated[str | None, Query(pattern=PROJECT_ID_PATTERN)] = None,
                       limit: Annotated[int, Query(ge=1, le=200)] = 200,
                       offset: Annotated[int, Query(ge=0, description="Skip this many jobs (a deep offset reads "
                                                                      "the index up to it; prefer `after`).")] = 0,
                       after: Annotated[str | None, Query(max_length=200, description=(
                           "The `next_cursor` of the previous page: the jobs after it, in the same order."))] = None,
                       ) -> Response:
    """The user's jobs, newest first; page with `after` = the previous answer's `next_cursor` (or `offset`)."""
    cursor = None
    if after is not None:
        if offset:
            raise _query_error("offset", "give `after` or `offset`, not both: `after` already says where the "
                                         "page starts", offset)
        try:
            cursor = JobCursor.decode(after)
        except InvalidCursor as err:
            raise _query_error("after", str(err), after) from None
    page = store.page_jobs(owner_id=user.id, status=status, project_id=project_id, limit=limit, offset=offset,
                           after=cursor, light=True)
    queue = store.queue_positions(job_ids=[j.id for j in page.rows if j.status == JobStatus.REQUESTED])
    answer = TrainingJobsPublic(data=[TrainingJobPublic.from_job(j, queue_position=queue.get(j.id))
                                      for j in page.rows], count=page.count,
                                next_cursor=page.next_cursor.encode() if page.next_cursor else None)
    # Serialised once, here: returned as a model, FastAPI would dump, validate and encode it again (most of the
    # time of a 200-row page).
    return Response(answer.model_dump_json(), media_type="application/json")


def _query_error(param: str, message: str, value: Any) -> RequestValidationError:
    """A 422 shaped like FastAPI's own for a query parameter (`loc` = ["query", param])."""
    return RequestValidationError([{"type": "value_error", "loc": ("query", param), "msg": message,
                                    "input": value, "ctx": {"error": message}}])


@router.get("/{job_id}", response_model=TrainingJobPublic)
def get_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Status, configuration and progress; `metrics` once `complete`; `queue_position` while `requested`."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    return TrainingJobPublic.from_job(job, queue_position=store.queue_positions(job_ids=[job.id]).get(job.id))


@router.get("/{job_id}/logs", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "train.log"}})
async def get_training_job_logs(job_id: JobId, request: Request, user: CurrentUser, store: StoreDep,
                                settings: SettingsDep,
                                follow: Annotated[bool, Query(description="Stream until the job ends.")] = False):
    """The training log: whole, or followed (streamed) while the job is `requested` or `running`."""
    job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=user.id)
    path = JobFolder(job.id, settings.home).log_path
    if not follow:
        return PlainTextResponse(await asyncio.to_thread(_read_text, path))
    return StreamingResponse(_follow_log(path, job.id, user.id, store, settings.log_follow_poll_s),
                             media_type="text/plain; charset=utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


async def _follow_log(path: Path, job_id: str, owner_id: int, store: Store, poll_s: float) -> AsyncIterator[bytes]:
    """The log's whole lines as they are appended, until the job leaves `requested`/`running` (or is deleted)."""
    pos = 0
    pending = b""

    def read_new() -> bytes:
        nonlocal pos, pending
        try:
            with open(path, "rb") as fh:
                fh.seek(pos)
                data = fh.read()
                pos = fh.tell()
        except FileNotFoundError:
            return b""
        data = pending + data
        cut = data.rfind(b"\n") + 1  # whole lines only: a line is written in one append
        pending = data[cut:]
        return data[:cut]

    while True:
        chunk = read_new()
        if chunk:
            yield chunk
        try:
            job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=owner_id)
        except JobNotFound:  # deleted while followed
            return
        if job.status not in (JobStatus.REQUESTED, JobStatus.RUNNING):
            tail = read_new() + pending
            if tail:
                yield tail
            return
        await asyncio.sleep(poll_s)


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_training_job_checkpoints(job_id: JobId, user: CurrentUser, store: StoreDep,
                                  settings: SettingsDep) -> CheckpointsPublic:
    """Every saved checkpoint, oldest first; each UUID is a valid `base_model` for a new job."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    items = [CheckpointPublic.model_validate(m.model_dump(exclude={"files", "job_id", "family"}))
             for m in list_checkpoints(JobFolder(job.id, settings.home))]
    return CheckpointsPublic(data=items, count=len(items))


@router.post("/{job_id}/stop", response_model=TrainingJobPublic,
             responses={409: {"description": "The job is not `running`."}})
def stop_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Ask a `running` job to stop: it checkpoints, then ends `cancelled` (`stop_requested` until then)."""
    return TrainingJobPublic.from_job(store.request_stop(job_id=job_id, owner_id=user.id))


@router.delete("/{job_id}", response_model=Message, responses={409: {"description": "The job is `running`: stop it first."}})
def delete_training_job(job_id: JobId, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Message:
    """Remove the job with its checkpoints, logs and files."""
    job = store.delete_job(job_id=job_id, owner_id=user.id)
    folder = JobFolder(job.id, settings.home)
    if folder.root.exists():
        shutil.rmtree(folder.root)
    return Message(message=f"job {job.id} ({job.name}) deleted with its checkpoints, logs and files")
