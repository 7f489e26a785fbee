"""A job's typed event list: `$FELIX_HOME/jobs/<id>/events.jsonl`, one JSON object a line.

Every event has an `id` (1, 2, 3, … in the order written), a `time`, a `level`, a `type` (`EventType`) and a
`data` object; events a training step caused also carry that `step`, so a resumed run can cut the events
logged after its checkpoint (`cut_events`), as it cuts metrics.jsonl. The runner (rank 0) and the worker
both append; an exclusive `fcntl` lock on `events.jsonl.lock` around read-last-id + append keeps ids unique
and ordered (a separate lock file, because `cut_events` replaces events.jsonl by rename).

Readers (`read_events`) skip a torn last line: the file is append-only, so a line is either whole or being
written. This module imports nothing heavy (the API serves events without torch).
"""

from __future__ import annotations

import fcntl
import json
import os
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from felix_train.jobs import atomic_write_bytes, utcnow
from felix_train.jsonl import keep_lines

EVENTS_FILE = "events.jsonl"


class EventType(str, Enum):
    """What happened. Stable names: clients switch on them."""

    STATUS_CHANGED = "status_changed"  # data: {status, previous, error?: {code, message}} (JobFolder.update_state)
    STEP_METRICS = "step_metrics"  # data: a logged step's figures, compact (Reporter.log_metrics; one per step)
    EVAL_RESULT = "eval_result"  # data: {eval_f1 | eval_loss | ..., split?}
    CHECKPOINT_SAVED = "checkpoint_saved"  # data: {uuid, step, epoch, removed: [uuids retention deleted]}
    WARNING = "warning"  # data: {code, message, ...}: records_truncated, records_dropped, grpo_zero_std,
    # loss_nan, loss_spike (Reporter.warn; the loss rule is reporting.LossWatch)
    RESTARTED = "restarted"  # data: {attempt, reason: killed | out_of_memory | preempted | worker_shutdown, ...}
    RESUMED = "resumed"  # data: {from_step, checkpoint?}: a run continued from a checkpoint (written by the cut)
    STOP_REQUESTED = "stop_requested"  # data: {by: user | budget, budget?}
    BUDGET_REACHED = "budget_reached"  # data: {budget: max_time | max_tokens, limit, used}
    DEPLOYED = "deployed"  # data: {deployment_id, status: deployed}: its inference process answers /health


class EventLevel(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def events_path(job_root: str | os.PathLike) -> Path:
    return Path(job_root) / EVENTS_FILE


class _Locked:
    """An exclusive lock on `events.jsonl.lock` (dies with its holder)."""

    def __init__(self, path: Path):
        self.lock_path = path.with_name(path.name + ".lock")

    def __enter__(self) -> "_Locked":
        self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _last_id(fh) -> int:
    """The id of the last whole line of an open events file (0 if none); reads only the tail."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    chunk = min(size, 64 * 1024)
    while chunk:
        fh.seek(size - chunk)
        lines = fh.read(chunk).splitlines()
        for raw in reversed(lines):
            try:
                return int(json.loads(raw)["id"])
            except (ValueError, KeyError, TypeError):
                continue
        if chunk == size:
            break
        chunk = min(size, chunk * 4)
    return 0


def append_event(job_root: str | os.PathLike, type: EventType | str, data: dict[str, Any] | None = None, *,
                 level: EventLevel | str = EventLevel.INFO, step: int | None = None) -> dict[str, Any]:
    """Append one event and return it (with its id). The caller decides who writes (rank 0 only)."""
    path = events_path(job_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    event: dict[str, Any] = {"id": 0, "time": utcnow(), "level": EventLevel(level).value,
                             "type": EventType(type).value, "data": dict(data or {})}
    if step is not None:
        event["step"] = int(step)
    with _Locked(path), open(path, "a+b") as fh:
        event["id"] = _last_id(fh) + 1
        end = fh.seek(0, os.SEEK_END)
        if end:
            fh.seek(end - 1)
            if fh.read(1) != b"\n":  # a writer killed mid-line: end its torn line so ours stays whole
                fh.write(b"\n")
        fh.write((json.dumps(event, default=str) + "\n").encode("utf-8"))
        fh.flush()
    return event


def iter_events(job_root: str | os.PathLike) -> Iterator[dict[str, Any]]:
    path = events_path(job_root)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # a line being written
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("id"), int):
                yield event


def read_events(job_root: str | os.PathLike, *, after: int = 0, limit: int | None = None,
                types: set[str] | None = None) -> list[dict[str, Any]]:
    """The events with id > `after`, in order, at most `limit`, optionally only the given types."""
    out: list[dict[str, Any]] = []
    for event in iter_events(job_root):
        if event["id"] <= after or (types and event.get("type") not in types):
            continue
        out.append(event)
        if limit is not None and len(out) >= limit:
            break
    return out


def cut_events(job_root: str | os.PathLike, step: int, *, resumed: dict[str, Any] | None = None) -> int:
    """Drop the events a step after `step` caused (a resumed run repeats those steps); events with no step
    (status changes, restarts, deployments) stay. Ids are never reused for new events: when the cut removes
    the last line, a `resumed` event takes its id, so the next append continues after the last id ever
    written and a follower's `after=` cursor stays valid. With `resumed` (the data of the run's `resumed`
    event, e.g. `{from_step, checkpoint}`), that event is always written (into the rewritten file, with the
    last id when the cut removed the last line; else appended), so a resume leaves exactly one `resumed`
    event. Atomic (temp file + rename). Returns how many events were removed."""
    path = events_path(job_root)
    removed = 0
    if path.exists():
        removed = _cut(path, step, resumed)
    if not removed and resumed is not None:  # nothing cut: the resumed event is an ordinary append
        append_event(job_root, EventType.RESUMED, resumed)
    return removed


def _cut(path: Path, step: int, resumed: dict[str, Any] | None) -> int:
    with _Locked(path), open(path, "rb") as fh:
        last = _last_id(fh)
        fh.seek(0)
        kept, removed = keep_lines(fh.read(), lambda e: isinstance(e.get("id"), int)
                                   and not (isinstance(e.get("step"), int) and e["step"] > step))
        kept_last = json.loads(kept[-1])["id"] if kept else 0
        if removed:
            if kept_last != last or resumed is not None:
                marker = {"id": last if kept_last != last else last + 1, "time": utcnow(),
                          "level": EventLevel.INFO.value, "type": EventType.RESUMED.value,
                          "data": dict(resumed) if resumed is not None else {"from_step": int(step)}}
                kept.append((json.dumps(marker, default=str) + "\n").encode("utf-8"))
            atomic_write_bytes(path, b"".join(kept))
    return removed
