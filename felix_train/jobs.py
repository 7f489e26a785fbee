"""The job folder: paths, atomic writes, the one-run-per-job lock (DESIGN.md, "The job folder").

The typed state written into it (`JobState`, `JobStatus`, `ExitCode`, `ErrorCode`) lives in
`felix_train.job_state` and is re-exported here.

This module is the contract between the runner (writes), the service (reads) and
the CLI. It imports nothing heavy.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from felix_train.errors import FelixError, JobNotFound
from felix_train.job_state import (  # noqa: F401  (re-exported: the job folder's contract names)
    DATASET_ERROR_TYPES,
    ErrorCode,
    ExitCode,
    JobError,
    JobState,
    JobStatus,
    Progress,
    error_code_of,
    new_job_id,
    status_after_exit,
)

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


def felix_home(home: str | os.PathLike | None = None) -> Path:
    """`$FELIX_HOME`, defaulting to `~/.felix`; an explicit `home` wins."""
    if home is not None:
        return Path(home).expanduser()
    return Path(os.environ.get("FELIX_HOME", "~/.felix")).expanduser()


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a temp file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; readers may be another user (API, worker)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename folder `src` to `dest`, replacing any previous `dest` (moved aside first, then removed).

    The one directory swap (final model, caches, exports): a reader sees the old folder or the new
    one, never a half-written one.
    """
    src, dest = Path(src), Path(dest)
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old.{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write (append-only files: train.log, metrics.jsonl)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not line.endswith("\n"):
        line += "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise ValueError(
            f"job id must match {JOB_ID_PATTERN} (letters, digits, '_', '-', '.'; at most 64), got {job_id!r}"
        )
    return job_id


class JobFolder:
    """`$FELIX_HOME/jobs/<job_id>/` and the names of everything in it."""

    def __init__(self, job_id: str, home: str | os.PathLike | None = None):
        self.id = validate_job_id(job_id)
        self.home = felix_home(home)
        self.root = self.home / "jobs" / job_id

    # -- paths ---------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.root / "spec.json"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def log_path(self) -> Path:
        return self.root / "train.log"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def stop_path(self) -> Path:
        """A stop request: its presence asks the run to checkpoint and end `cancelled`."""
        return self.root / "STOP"

    @property
    def work_dir(self) -> Path:
        """Scratch space for library output (HF `output_dir`); not part of the contract."""
        return self.root / "work"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    # -- state ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.status_path.exists() or self.spec_path.exists()

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)

    def read_status(self) -> dict:
        status = read_json(self.status_path)
        if status is None:
            raise JobNotFound(f"no job {self.id!r} under {self.home / 'jobs'}; `felix-train jobs list` shows the jobs")
        return status

    def write_status(self, status: dict) -> None:
        atomic_write_json(self.status_path, status)

    def read_state(self) -> JobState | None:
        """status.json as a `JobState`, or None when there is none yet."""
        data = read_json(self.status_path)
        return None if not data else JobState.model_validate(data)

    def write_state(self, state: JobState) -> None:
        """Replace status.json with `state` (every field, defaults included)."""
        self.write_status(state.to_json())

    def updated_state(self, **fields: Any) -> JobState:
        """status.json (or a new state of this job) with `fields` set, not written."""
        state = self.read_state() or JobState(id=self.id)
        data = state.to_json(only_set=True)
        for key, value in fields.items():
            data[key] = value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else value
        return JobState.model_validate(data)

    def update_state(self, **fields: Any) -> JobState:
        """Read status.json, set `fields`, write it back atomically; returns the new state.

        Only the fields status.json had and those given are written (a default is never added by an update).
        A changed `status` appends a `status_changed` event (felix_train.events) after the write: every status
        transition (runner, worker, deployments) goes through here, so each is told once.
        """
        before = read_json(self.status_path) if "status" in fields else None
        state = self.updated_state(**fields)
        self.write_status(state.to_json(only_set=True))
        previous = before.get("status") if isinstance(before, dict) else None
        if "status" in fields and previous != state.status:
            self._status_event(state, previous)
        return state

    def _status_event(self, state: JobState, previous: str | None) -> None:
        from felix_train.events import EventLevel, EventType, append_event  # events builds on this module

        data: dict[str, Any] = {"status": state.status, "previous": previous}
        if state.status == JobStatus.FAILED.value and state.error is not None:
            data["error"] = {"code": state.error.code, "message": state.error.message}
        level = EventLevel.ERROR if state.status == JobStatus.FAILED.value else EventLevel.INFO
        append_event(self.root, EventType.STATUS_CHANGED, data, level=level)

    def read_spec(self) -> dict | None:
        return read_json(self.spec_path)

    def request_stop(self) -> None:
        atomic_write_text(self.stop_path, utcnow() + "\n")

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop(self) -> None:
        try:
            self.stop_path.unlink()
        except FileNotFoundError:
            pass

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=False)

    def lock(self) -> JobLock:
        """This folder's exclusive run lock (not yet taken: `acquire()` it, or use it in a `with` block)."""
        return JobLock(self)


LOCK_FILE = ".lock"
"""`jobs/<id>/.lock`: the file a run holds an exclusive `flock` on (`JobLock`); its content is the holder's pid."""


class JobBusy(FelixError):
    """Another run of the same job id holds the job folder (`JobLock`); exit code 5 (`ExitCode.BUSY`)."""

    exit_code = ExitCode.BUSY

    def __init__(self, job_id: str, pid: int | None):
        self.job_id = job_id
        self.pid = pid
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"job {job_id} is already running ({holder}); wait for it or stop it with "
                         f"`felix-train jobs stop {job_id}`")


class JobLock:
    """An exclusive lock on one job folder: an OS lock (`fcntl.flock`) on `jobs/<id>/.lock`, held while the
    lock file stays open. The kernel drops it when its holder exits, however it exits (a kill -9 included), so
    a lock is never stale. The file is never removed (removing it would let two runs lock two different files).

    `acquire()` creates the job folder if need be (nothing else in it is touched) and raises `JobBusy` naming
    the holder's pid when another process holds the lock; `release()` (or leaving the `with` block) drops it.
    """

    def __init__(self, job: JobFolder):
        self.job = job
        self.path = job.root / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> JobLock:
        """Take the lock at once or raise `JobBusy` (never waits)."""
        if self._fd is not None:
            return self
        self.job.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise JobBusy(self.job.id, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor of the open file drops the flock

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def list_jobs(home: str | os.PathLike | None = None) -> list[dict]:
    """Every job's status.json under `$FELIX_HOME/jobs`, newest first."""
    jobs_dir = felix_home(home) / "jobs"
    out = []
    if jobs_dir.is_dir():
        for child in jobs_dir.iterdir():
            status = read_json(child / "status.json")
            if status:
                out.append(status)
    out.sort(key=lambda s: s.get("created_at") or "", reverse=True)
    return out
