"""`GET /felix/training-jobs/{id}/events`: a job's typed event list (events.jsonl), a page at a time or streamed.

JSON (the default): `{data, has_more, last_id}`, the events with id > `after`, at most `limit`; a client pages with
`after=last_id`. With `Accept: text/event-stream`: Server-Sent Events (`id:` the event id, `event:` its type,
`data:` the event as JSON), resuming after the `Last-Event-ID` header (else `after`), until the job has left
`requested`/`running` and every event is sent. The events themselves are written by the runner and the worker
(`felix_train.events`); this module only reads them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from felix_train.errors import JobNotFound
from felix_train.events import EventLevel, EventType, read_events
from felix_train.jobs import JobFolder, JobStatus
from felix_train.service.api.deps import CurrentUser, JobId, SettingsDep, StoreDep
from felix_train.service.store import Store

router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])

SSE_MEDIA_TYPE = "text/event-stream"
KEEPALIVE_S = 15.0
"""A followed stream sends an SSE comment when it has been quiet this long (proxies close idle connections)."""

_EXAMPLE_EVENTS = [
    {"id": 1, "time": "2025-01-01T12:00:00Z", "level": "info", "type": "status_changed",
     "data": {"status": "running", "previous": "requested"}},
    {"id": 2, "time": "2025-01-01T12:00:05Z", "level": "info", "type": "step_metrics", "step": 10,
     "data": {"loss": 0.8123, "learning_rate": 4.5e-05, "grad_norm": 1.93, "epoch": 0.25}},
    {"id": 3, "time": "2025-01-01T12:00:09Z", "level": "info", "type": "checkpoint_saved", "step": 20,
     "data": {"uuid": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d", "step": 20, "epoch": 0.5, "removed": []}},
    {"id": 4, "time": "2025-01-01T12:00:09Z", "level": "warning", "type": "warning", "step": 20,
     "data": {"code": "loss_spike", "message": "step 20: training loss 3.1 is over 3x the median 0.79 of the "
                                               "last 10 logged losses", "loss": 3.1}},
]


# Properties of one event, as events.jsonl holds it
class EventPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_EVENTS[1]]})

    id: int = Field(description="1, 2, 3, … in the order written; never reused (a resumed run's cut keeps them).")
    time: str = Field(description="When it was written (UTC, ISO 8601).")
    level: EventLevel
    type: EventType = Field(description="What happened; `data` depends on it (see `felix_train.events.EventType`).")
    step: int | None = Field(None, description="The training step that caused it, if one did.")
    data: dict[str, Any] = Field(default_factory=dict)


# A page of events
class EventsPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"data": _EXAMPLE_EVENTS, "has_more": False,
                                                               "last_id": 4}]})

    data: list[EventPublic]
    has_more: bool = Field(description="More events follow `last_id` already: ask again with `after=last_id`.")
    last_id: int = Field(description="The id of the last event in `data` (`after` when `data` is empty): the "
                                     "next request's `after`.")


_SSE_EXAMPLE = "".join(f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in _EXAMPLE_EVENTS[:2])


@router.get("/{job_id}/events", response_model=EventsPublic,
            responses={200: {"description": "A page of events (JSON), or with `Accept: text/event-stream` the "
                                            "events streamed as Server-Sent Events until the job ends.",
                             "content": {SSE_MEDIA_TYPE: {"example": _SSE_EXAMPLE}}},
                       404: {"description": "No such job of this user."}})
async def get_training_job_events(
        job_id: JobId, request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep,
        after: Annotated[int, Query(ge=0, description="Only events with a larger id.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many (JSON only).")] = 100,
        type: Annotated[list[EventType] | None, Query(description="Only these types (repeatable).")] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description=(
            "SSE: resume after this event id (a reconnecting EventSource sends it); overrides `after`."))] = None):
    """The job's typed events in order: status changes, sampled step metrics, eval results, checkpoints saved,
    warnings, restarts, stop requests, deployments."""
    job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=user.id)
    root = JobFolder(job.id, settings.home).root
    types = {t.value for t in type} if type else None
    if SSE_MEDIA_TYPE in request.headers.get("accept", ""):
        start = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else after
        return StreamingResponse(_stream(root, job.id, user.id, store, settings.log_follow_poll_s, start, types),
                                 media_type=SSE_MEDIA_TYPE, headers={"Cache-Control": "no-cache",
                                                                     "X-Accel-Buffering": "no"})
    events = await asyncio.to_thread(read_events, root, after=after, limit=limit + 1, types=types)
    page = events[:limit]
    return EventsPublic(data=[EventPublic.model_validate(e) for e in page], has_more=len(events) > limit,
                        last_id=page[-1]["id"] if page else after)


def sse_frame(event: dict[str, Any]) -> bytes:
    """One Server-Sent Event: `id`, `event` (the type) and `data` (the event as one JSON line)."""
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _stream(root: Path, job_id: str, owner_id: int, store: Store, poll_s: float, after: int,
                  types: set[str] | None) -> AsyncIterator[bytes]:
    """Every event after `after`, then the new ones as they are written, until the job has ended (or is deleted).
    A job seen ended is read once more one poll later: the worker writes its last events just after the store."""
    cursor, quiet, ending = after, 0.0, False
    while True:
        events = await asyncio.to_thread(read_events, root, after=cursor, types=types)
        for event in events:
            yield sse_frame(event)
        if events:
            cursor, quiet = events[-1]["id"], 0.0
        if ending:
            return
        try:
            job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=owner_id)
        except JobNotFound:  # deleted while followed
            return
        ending = job.status not in (JobStatus.REQUESTED, JobStatus.RUNNING)
        if not ending and quiet >= KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet = 0.0
        await asyncio.sleep(poll_s)
        quiet += poll_s
