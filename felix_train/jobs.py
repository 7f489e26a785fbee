"""The job folder: paths, statuses and atomic writes (DESIGN.md, "The job folder").

This module is the contract between the runner (writes), the service (reads) and
the CLI. It imports nothing heavy.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import tempfile
import traceback
import uuid
from datetime import datetime, timezone
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from felix_train.errors import CheckpointNotFound, DatasetError, FelixError, JobNotFound, ModelNotAvailable, SpecError

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


class JobStatus(str, Enum):
    """The six lifecycle states, shared by status.json, the store and the API."""

    REQUESTED = "requested"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    DEPLOYED = "deployed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DEPLOYED)


class ExitCode(IntEnum):
    """Exit codes of a run (DESIGN.md).

    | code | name | meaning |
    |---|---|---|
    | 0 | complete | the job is complete (or was already) |
    | 1 | failed | the run failed; status.json has the error, train.log the traceback |
    | 2 | spec invalid | the spec (or the job id) is invalid; nothing was trained |
    | 3 | dataset invalid | a dataset is missing, not ready or of the wrong format |
    | 4 | cancelled | a stop request ended the run after a checkpoint |
    | 5 | busy | another run of the same job id holds the job folder; this one touched nothing |
    | 75 | preempted | interrupted without a stop request; rerun the same spec to resume |
    """

    COMPLETE = 0
    FAILED = 1
    SPEC_INVALID = 2
    DATASET_INVALID = 3
    CANCELLED = 4
    BUSY = 5
    PREEMPTED = 75


def status_after_exit(rc: int, *, file_status: str | None, stop_requested: bool = False,
                      terminated: bool = False) -> JobStatus:
    """The job's status once its run exited with `rc` (the one mapping, for the runner and the worker).

    `file_status` is what the run left in status.json; `stop_requested` whether a stop was asked for
    (a stop outranks a preemption); `terminated` whether the caller itself signalled the run (a worker
    shutting down), so a SIGTERM/SIGKILL death counts as a preemption, not a failure.

    `BUSY` (another run holds the job folder) maps to `requested`: this run did nothing and wrote nothing; the
    job's state is the live run's, and a queue may offer the job again (its next run finds it complete, or
    resumes it). A caller must not write that state into status.json: it belongs to the live run.
    """
    if rc == ExitCode.BUSY:
        return JobStatus.REQUESTED
    if rc == ExitCode.COMPLETE:
        return JobStatus.COMPLETE if file_status == JobStatus.COMPLETE.value else JobStatus.FAILED
    if rc == ExitCode.CANCELLED:
        return JobStatus.CANCELLED
    if rc == ExitCode.PREEMPTED or (terminated and rc in (-signal.SIGTERM, -signal.SIGKILL)):
        return JobStatus.CANCELLED if stop_requested else JobStatus.REQUESTED
    return JobStatus.FAILED


def new_job_id() -> str:
    """The one job-id format: `job-` and 32 hex digits (matches `JOB_ID_PATTERN`)."""
    return f"job-{uuid.uuid4().hex}"


class Progress(BaseModel):
    """Where a run is: `status.json`'s `progress`."""

    model_config = ConfigDict(extra="allow")

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = 0
    eta_s: float | None = None


class ErrorCode(str, Enum):
    """`status.json`'s `error.code`: why a job failed, in a stable word an API answers with (`{code, message,
    param}`); `error.where` (an internal file and line) stays in status.json and train.log for operators.

    | code | when |
    |---|---|
    | `spec_invalid` | the spec is invalid (a stored spec differs, a field is out of range, ...) |
    | `dataset_invalid` | a dataset is missing, not `ready`, of the wrong format, or has a bad record |
    | `model_not_available` | the base model cannot be materialised (offline, not in the cache) |
    | `checkpoint_not_found` | the `base_model` checkpoint UUID (or a resume checkpoint) is gone |
    | `report_to_unavailable` | a tracker of `engine.report_to` is not installed where the job runs |
    | `busy` | another run holds the job folder (never written: the refused run touches nothing) |
    | `out_of_memory` | the worker saw the kernel's OOM killer end the run (the worker sets it) |
    | `killed` | the run was killed by a signal (the worker sets it) |
    | `preempted_too_often` | the run was requeued more often than the worker allows (the worker sets it) |
    | `launch_failed` | a distributed run could not be started (`accelerate launch` failed) |
    | `worker_lost` | the job's worker stopped heartbeating on each of its attempts (the store sets it) |
    | `run_crashed` | the run exited with an unexpected code and left no error of its own (the worker sets it) |
    | `run_not_started` | the worker could not start the run's process |
    | `internal` | anything else: `message` says what, train.log has the traceback |
    """

    SPEC_INVALID = "spec_invalid"
    DATASET_INVALID = "dataset_invalid"
    MODEL_NOT_AVAILABLE = "model_not_available"
    CHECKPOINT_NOT_FOUND = "checkpoint_not_found"
    REPORT_TO_UNAVAILABLE = "report_to_unavailable"
    BUSY = "busy"
    OUT_OF_MEMORY = "out_of_memory"
    KILLED = "killed"
    PREEMPTED_TOO_OFTEN = "preempted_too_often"
    LAUNCH_FAILED = "launch_failed"
    WORKER_LOST = "worker_lost"
    RUN_CRASHED = "run_crashed"
    RUN_NOT_STARTED = "run_not_started"
    INTERNAL = "internal"


DATASET_ERROR_TYPES = frozenset({"dataset_not_found", "dataset_not_ready", "dataset_format_mismatch"})
"""SpecError item types that make a spec error a dataset error (exit code 3, `dataset_invalid`)."""

_ITEM_CODES = [(DATASET_ERROR_TYPES, ErrorCode.DATASET_INVALID),
               (frozenset({"report_to_unavailable"}), ErrorCode.REPORT_TO_UNAVAILABLE),
               (frozenset({"unknown_checkpoint"}), ErrorCode.CHECKPOINT_NOT_FOUND)]
"""A SpecError whose items all have types of one set gets that set's code; any other SpecError `spec_invalid`."""

_CLASS_CODES = [(DatasetError, ErrorCode.DATASET_INVALID), (ModelNotAvailable, ErrorCode.MODEL_NOT_AVAILABLE),
                (CheckpointNotFound, ErrorCode.CHECKPOINT_NOT_FOUND)]


def error_code_of(err: BaseException) -> ErrorCode:
    """The stable `ErrorCode` of an error that ended a job (`internal` for anything unforeseen)."""
    if isinstance(err, SpecError):
        types = {e.type for e in err.errors}
        for item_types, code in _ITEM_CODES:
            if types and types <= item_types:
                return code
        return ErrorCode.SPEC_INVALID
    for cls, code in _CLASS_CODES:
        if isinstance(err, cls):
            return code
    return ErrorCode.INTERNAL


class JobError(BaseModel):
    """`status.json`'s `error`: why a job failed (a stable `code`, type, message, where it was raised,
    field-level items). `code` is an `ErrorCode` value; an API shows `code` and `message`, never `where`."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str
    code: str = ErrorCode.INTERNAL.value
    where: str = ""
    errors: list[dict[str, Any]] = []

    @classmethod
    def of(cls, err: BaseException, message: str | None = None) -> JobError:
        """The error of a job that `err` ended: its code (`error_code_of`), type, `message` (default
        `str(err)`), the innermost frame (`file:line in function`) and the field-level items of a `FelixError`
        that carries them."""
        frames = traceback.extract_tb(err.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        items = err.to_list() if hasattr(err, "to_list") else []
        return cls(type=type(err).__name__, message=str(err) if message is None else message,
                   code=error_code_of(err).value, where=where, errors=items)


class JobState(BaseModel):
    """`status.json`, typed: the one object that writes a job's state (DESIGN.md, "The job folder").

    The runner writes it through `JobFolder.update_state`; the worker and the store read it. Unknown
    keys are kept (`extra="allow"`), so a newer writer's fields survive an older reader's update.
    """

    model_config = ConfigDict(extra="allow", use_enum_values=True)

    id: str
    name: str | None = None
    status: JobStatus = JobStatus.REQUESTED
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress | None = None
    error: JobError | None = None
    metrics: dict[str, Any] | None = None

    def to_json(self, *, only_set: bool = False) -> dict[str, Any]:
        """status.json's content; `only_set` leaves out the fields never given (no defaults written)."""
        return self.model_dump(mode="json", exclude_unset=only_set)


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
        """
        state = self.updated_state(**fields)
        self.write_status(state.to_json(only_set=True))
        return state

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
