"""The API's pydantic schemas: what a request carries (`*Create`) and what an answer holds (`*Public`, and
`*sPublic(data, count)` for lists), with the constructors that turn store rows and manifests into answers."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from felix_train.catalog import BaseModelEntry
from felix_train.data.formats import LineError
from felix_train.data.registry import DatasetManifest, DatasetState
from felix_train.jobs import ErrorCode, JobStatus
from felix_train.runner import DATASET_ERROR_TYPES
from felix_train.service.store import Job
from felix_train.spec import JobSpec, spec_from_json

DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A user's dataset name: as the spec's, but at most 100 characters."""

PROJECT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


# -- training jobs ---------------------------------------------------------------------------------------

HYPERPARAMETERS_EXAMPLE = {
    "num_epochs": 3, "learning_rate": 0.0002, "batch_size": 8, "gradient_accumulation_steps": 1, "max_steps": None,
    "max_length": 1024, "length_policy": "error", "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0,
    "seed": 42, "precision": "auto", "encoder_learning_rate": None,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}, "rl_config": None,
    "max_time": 7200.0, "max_tokens": None}


class TrainingJobCreate(JobSpec):
    """Properties to receive on job creation: the job spec.

    `engine.home`, `engine.job_id`, `engine.dataset_owner` and `engine.distributed.config` are set by the
    service and refused here.
    """


ERROR_CODES: dict[str, ErrorCode] = {
    # the `type` of a stored error (status.json, the store): its code
    "SpecError": ErrorCode.SPEC_INVALID,  # runner; all items about datasets: dataset_invalid (as its exit code)
    "DatasetError": ErrorCode.DATASET_INVALID,  # runner
    "JSONLError": ErrorCode.DATASET_INVALID,  # felix_train.jsonl, a bad line read at run time
    "ModelNotAvailable": ErrorCode.MODEL_NOT_AVAILABLE,  # catalog
    "CheckpointNotFound": ErrorCode.CHECKPOINT_NOT_FOUND,  # checkpoints
    "OutOfMemoryError": ErrorCode.OUT_OF_MEMORY,  # torch.OutOfMemoryError (CUDA, MPS)
    "MemoryError": ErrorCode.OUT_OF_MEMORY,  # host memory
    "RunnerExited": ErrorCode.KILLED,  # worker: the run ended without writing its error
    "WorkerLost": ErrorCode.PREEMPTED_TOO_OFTEN,  # store.requeue_stale: the last of `max_attempts` runs lost
    "LaunchFailed": ErrorCode.LAUNCH_FAILED,  # runner.launch_distributed
}
"""Codes for errors recorded without one (`code` absent or null: before `ErrorCode`, or by an older worker), from
their `type`; any other type is `internal`. A stored error that carries its own `code` keeps it. The codes
themselves, and what each means, are `felix_train.jobs.ErrorCode` (one table for the runner, worker and API)."""


class ErrorPublic(BaseModel):
    """Why a job failed. The details (traceback, source location) are in the job's log, never here."""

    code: ErrorCode = Field(description="A stable code to act on; the `ErrorCode` schema lists each one.")
    message: str = Field(description="What went wrong and how to fix it, for people.")
    param: str | None = Field(None, description="The first spec field at fault, dotted (`engine.seed`); null "
                                                "when the error is not about a field.")

    @classmethod
    def from_stored(cls, error: dict[str, Any]) -> ErrorPublic:
        """The public part of an error as the runner, worker or store recorded it
        (`{type, message, where, errors: [{loc, msg, type}]}`)."""
        items = [e for e in error.get("errors") or [] if isinstance(e, dict)]
        code = ERROR_CODES.get(str(error.get("type")), ErrorCode.INTERNAL)
        if code == ErrorCode.SPEC_INVALID and items and all(e.get("type") in DATASET_ERROR_TYPES for e in items):
            code = ErrorCode.DATASET_INVALID
        if error.get("code") in ErrorCode._value2member_map_:
            code = ErrorCode(error["code"])
        loc = items[0].get("loc") if items else None
        param = ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) and loc else None
        return cls(code=code, message=str(error.get("message") or code.value), param=param)


class ProgressPublic(BaseModel):
    """Where a run is, and its throughput while `running`."""

    step: int | None = 0
    total_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = Field(None, description="Seconds left at this run's rate.", examples=[412.5])
    trained_tokens: int | None = Field(None, description="Tokens trained on so far (decoder LLMs: non-padding input "
                                       "tokens; GLiNER2: samples), every run of the job.", examples=[183424])
    tokens_per_s: float | None = Field(None, description="Decoder LLMs: trained tokens per second.", examples=[2210.4])
    samples_per_s: float | None = Field(None, description="GLiNER2: training records per second.", examples=[61.3])
    achieved_tflops: float | None = Field(None, description="Model FLOP/s achieved, in TFLOP/s.", examples=[1.82])
    mfu: float | None = Field(None, description="Model FLOPs utilisation: achieved / the device's measured peak.",
                              examples=[0.31])


class TrainingJobPublic(BaseModel):
    """Properties to return about a job. `metrics` is present only when the job is `complete`."""

    id: str
    name: str
    status: JobStatus
    project_id: str | None = None
    base_model: str
    training_type: str
    training_algorithm: str
    configuration: dict[str, Any] = Field(description="The resolved spec (defaults filled in).")
    progress: ProgressPublic | None = None
    error: ErrorPublic | None = Field(None, description="Why the job failed (`failed` only).")
    metrics: dict[str, Any] | None = Field(None, description="Final metrics; present only when `complete`.",
                                           exclude_if=lambda v: v is None)
    stop_requested: bool = False
    deploy_requested: bool = Field(False, description="A deployment was asked for: `complete` while it starts, "
                                                      "then `deployed`; false again after undeploy or if it fails "
                                                      "(the reason is in the logs).")
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_finish: datetime | None = Field(None, description="While `running`: now + the progress's ETA; null "
                                              "otherwise.", examples=["2025-06-01T12:34:56Z"])
    trained_tokens: int | None = Field(None, description="Tokens trained on (decoder LLMs: non-padding input tokens; "
                                       "GLiNER2: samples, i.e. training records), over every run: the progress's while "
                                       "running, the final count once `complete`.", examples=[183424])
    hyperparameters: dict[str, Any] | None = Field(None, description="The resolved hyperparameters, defaults filled: "
                                                   "epochs, learning rate, batch size, gradient accumulation, LoRA "
                                                   "(r, alpha, dropout, target modules), max length, rl_config, budgets.",
                                                   examples=[HYPERPARAMETERS_EXAMPLE])
    queue_position: int | None = Field(None, description="While `requested`: how many queued jobs (all users) a "
                                       "worker takes before this one (0 = next); null otherwise.", examples=[2])

    @model_validator(mode="after")
    def _metrics_only_when_complete(self) -> TrainingJobPublic:
        # left out of the answer (`exclude_if`) rather than dropped by a serializer: a wrap serializer turns each
        # row into a dict before its JSON, which cost a fifth of a 200-row list
        if self.status != JobStatus.COMPLETE:
            self.metrics = None
        return self

    @classmethod
    def from_job(cls, job: Job, *, queue_position: int | None = None) -> TrainingJobPublic:
        spec = job.spec or {}
        progress = job.progress or {}
        final = (job.metrics or {}).get("trained_tokens") if job.status == JobStatus.COMPLETE else None
        return cls(
            estimated_finish=progress.get("estimated_finish") if job.status == JobStatus.RUNNING else None,
            trained_tokens=final if final is not None else progress.get("trained_tokens"),
            hyperparameters=_hyperparameters_of(job, spec),
            queue_position=queue_position if job.status == JobStatus.REQUESTED else None,
            id=job.id, name=job.name, status=job.status, project_id=job.project_id,
            base_model=spec.get("base_model", ""), training_type=str(spec.get("training_type", "")),
            training_algorithm=str(spec.get("training_algorithm", "")), configuration=public_spec(spec),
            progress=ProgressPublic.model_validate(job.progress) if job.progress else None,
            error=ErrorPublic.from_stored(job.error) if job.error else None,
            metrics=job.metrics, stop_requested=job.stop_requested, deploy_requested=bool(job.deploy_requested),
            attempts=job.attempts, created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at)


_HYPERPARAMETERS: dict[tuple, dict[str, Any] | None] = {}
_HYPERPARAMETERS_SIZE = 4096


def _hyperparameters_of(job: Job, spec: dict) -> dict[str, Any] | None:
    """`_hyperparameters` per job, kept per process by (id, created_at) as the store keeps decoded specs (a spec
    never changes; a resubmitted id has a new created_at): a 200-row page does not re-validate 200 specs."""
    key = (job.id, job.created_at)
    if key not in _HYPERPARAMETERS:
        if len(_HYPERPARAMETERS) >= _HYPERPARAMETERS_SIZE:
            _HYPERPARAMETERS.clear()
        _HYPERPARAMETERS[key] = _hyperparameters(spec)
    return _HYPERPARAMETERS[key]


def _hyperparameters(spec: dict) -> dict[str, Any] | None:
    """`JobSpec.hyperparameters()` of a stored (resolved) spec; None when it no longer reads as a spec."""
    try:
        return spec_from_json(spec).hyperparameters()
    except (ValueError, TypeError):
        return None


def public_spec(spec: dict) -> dict:
    """The stored (engine) spec as its owner wrote it, resolved: the service's internals dropped.

    Only the two dicts it changes are copied (a deep copy of every row's spec was most of a list's cost);
    the rest is shared with `spec`, a row just read from the store."""
    data = {k: v for k, v in spec.items() if k != "catalog_model"}
    if isinstance(data.get("engine"), dict):
        data["engine"] = {k: v for k, v in data["engine"].items() if k not in ("home", "dataset_owner")}
    return data


class TrainingJobsPublic(BaseModel):
    data: list[TrainingJobPublic]
    count: int = Field(description="Jobs matching the filters (all pages).")
    next_cursor: str | None = Field(
        None, examples=["c1.MjAyNS0wMS0wMlQxMDowMDowMC4wMDAwMDArMDA6MDB8am9iLTEyMzQ"],
        description="Pass it as `after` (with the same filters) for the next page; null on the last page. Opaque. "
                    "Unlike `offset`, a cursor never repeats or skips a job when jobs are submitted meanwhile, and a "
                    "deep page costs what the first one does.")


class CheckpointPublic(BaseModel):
    """A saved checkpoint; its `uuid` is a valid `base_model` for a new job."""

    uuid: str
    step: int
    epoch: float | None = None
    created_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    base_model: str
    training_type: str
    training_algorithm: str


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int


class FormatEnum(str, Enum):
    ZIP = "zip"
    TAR_GZ = "tar.gz"


class DownloadPublic(BaseModel):
    url: str = Field(description="GET it (no auth header needed) before `expires_at` for the archive of `model/`.")
    expires_at: datetime
    format: str


class Message(BaseModel):
    success: bool = True
    message: str


# -- trained models and predictions ----------------------------------------------------------------------


class TrainedModelPublic(BaseModel):
    """A successfully trained model: the `model/` of a `complete` (or `deployed`) job."""

    id: str = Field(description="The job id.")
    name: str
    status: JobStatus = Field(description="`complete`, or `deployed` while it serves predictions.")
    deploy_requested: bool = False
    base_model: str
    training_type: str
    training_algorithm: str
    project_id: str | None = None
    metrics: dict[str, Any] | None = None
    checkpoints: list[str] = Field(default_factory=list, description="Checkpoint UUIDs, oldest first.")
    created_at: datetime
    finished_at: datetime | None = None
    download: str = Field(description="Path of the endpoint that hands out a download URL.")
    predict: str = Field(description="Path of the predict endpoint (answers once `deployed`).")

    @classmethod
    def from_job(cls, job: Job, checkpoints: list[str]) -> TrainedModelPublic:
        spec = job.spec or {}
        return cls(
            id=job.id, name=job.name, status=job.status, deploy_requested=bool(job.deploy_requested),
            base_model=spec.get("base_model", ""), training_type=str(spec.get("training_type", "")),
            training_algorithm=str(spec.get("training_algorithm", "")), project_id=job.project_id,
            metrics=job.metrics, created_at=job.created_at, finished_at=job.finished_at, checkpoints=checkpoints,
            download=f"/felix/training-jobs/{job.id}/download", predict=f"/felix/trained-models/{job.id}/predict")


class TrainedModelsPublic(BaseModel):
    data: list[TrainedModelPublic]
    count: int


class GLiNER2PredictPublic(BaseModel):
    """A GLiNER2 prediction: gliner2's extraction result for `text` (`result`) or each of `texts` (`results`)."""

    id: str
    family: str
    result: dict[str, Any] | None = None
    results: list[dict[str, Any]] | None = None
    latency_ms: float


class LLMPredictPublic(BaseModel):
    """An LLM generation: the new text only (prompt excluded, special tokens skipped)."""

    id: str
    family: str
    text: str
    finish_reason: str = Field(description="`stop` (end-of-turn token) or `length` (`max_new_tokens` reached).")
    usage: dict[str, int] = Field(description="`prompt_tokens`, `completion_tokens`.")
    latency_ms: float


# -- base models and datasets ----------------------------------------------------------------------------


class BaseModelPublic(BaseModel):
    """One row of the catalog: a supported base model and what it allows."""

    model_config = ConfigDict(protected_namespaces=())

    id: str
    family: str
    description: str
    training_types: list[str]
    algorithms: list[str]
    rl_verified: bool
    default_num_epochs: int
    default_learning_rate: dict[str, float]
    default_batch_size: int
    default_max_length: int

    @classmethod
    def from_entry(cls, e: BaseModelEntry) -> BaseModelPublic:
        return cls(
            id=e.id, family=e.family.value, description=e.description,
            training_types=[t.value for t in e.training_types], algorithms=[a.value for a in e.algorithms],
            rl_verified=e.rl_verified, default_num_epochs=e.default_num_epochs,
            default_learning_rate={k.value: v for k, v in e.default_learning_rate.items()},
            default_batch_size=e.default_batch_size, default_max_length=e.default_max_length)


class DatasetPublic(BaseModel):
    """A dataset as its owner sees it. `errors` lists bad lines when `failed`."""

    name: str
    state: DatasetState
    format: str | None = None
    num_records: int = 0
    num_errors: int = 0
    error: str | None = None
    errors: list[LineError] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    source: str | None = None
    builtin: bool = False
    created_at: str | None = None
    validated_at: str | None = None

    @classmethod
    def from_manifest(cls, manifest: DatasetManifest | dict, name: str) -> DatasetPublic:
        """A registry manifest (or the copy a store row keeps) under the name its owner gave it."""
        data = manifest.model_dump(mode="json") if isinstance(manifest, BaseModel) else dict(manifest)
        data["name"] = name
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
