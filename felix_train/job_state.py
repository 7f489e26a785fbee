"""A job's state, typed: the six statuses, exit codes, error codes, and `status.json` as `JobState`.

One source of truth (DESIGN.md, "The job folder"): the runner writes a job's state through
`JobFolder.update_state` (felix_train.jobs), the worker maps a run's exit through `status_after_exit`, and
the store and the API read the same `JobState` / `ErrorCode`. Pure data: no torch, no I/O.
"""

from __future__ import annotations

import signal
import traceback
import uuid
from enum import Enum, IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from felix_train.errors import CheckpointNotFound, DatasetError, ModelNotAvailable, SpecError


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
    """Where a run is: `status.json`'s `progress`.

    Besides step, total_steps, epoch and `eta_s` (seconds left, from this run's rate), a running trainer adds
    `estimated_finish` (the time now + `eta_s`, ISO 8601 UTC, set by `Reporter.progress`), `trained_tokens`
    (input tokens of decoder LLMs, training records = samples for GLiNER2, over every run of the job) and its
    throughput: `tokens_per_s` (LLMs) or `samples_per_s` (GLiNER2), `achieved_tflops`, `mfu` where known.
    Other keys a trainer adds are kept (`extra="allow"`).
    """

    model_config = ConfigDict(extra="allow")

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = 0
    eta_s: float | None = None
    estimated_finish: str | None = None
    trained_tokens: int | None = None


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
    field-level items). `code` is an `ErrorCode` value; an API shows `code` and `message`, never `where`.

    `code` is None when none was recorded (an error written before codes existed, or by an older worker):
    a reader derives it from `type` then (the API's `ERROR_CODES`), so reading and re-saving an old error
    never turns it into `internal`."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str
    code: str | None = None
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
    estimated_finish: str | None = None
    """When the job should end (ISO 8601 UTC): while `running`, the progress's (now + ETA); null once it ended.
    A `requested` job keeps one only when an estimate set it (not a left-over of a preempted run's progress)."""
    trained_tokens: int | None = None
    """Tokens trained on (decoder LLMs: non-padding input tokens; GLiNER2: samples), over every run: the final
    metrics' once `complete`, else the progress's."""
    hyperparameters: dict[str, Any] | None = None
    """The resolved hyperparameters (`JobSpec.hyperparameters()`), written when the job starts."""

    @model_validator(mode="after")
    def _job_object_fields(self) -> JobState:
        """`estimated_finish` and `trained_tokens` follow the progress and the final metrics (one source each)."""
        progress = self.progress
        from_progress = progress.estimated_finish if progress is not None else None
        if self.status == JobStatus.RUNNING.value and from_progress:
            self.estimated_finish = from_progress
        elif JobStatus(self.status).is_terminal or (self.estimated_finish and self.estimated_finish == from_progress):
            self.estimated_finish = None
        final = (self.metrics or {}).get("trained_tokens") if self.status == JobStatus.COMPLETE.value else None
        tokens = final if isinstance(final, int) else progress.trained_tokens if progress is not None else None
        if tokens is not None:
            self.trained_tokens = tokens
        return self

    def to_json(self, *, only_set: bool = False) -> dict[str, Any]:
        """status.json's content; `only_set` leaves out the fields never given (no defaults written)."""
        return self.model_dump(mode="json", exclude_unset=only_set)
