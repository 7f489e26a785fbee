"""The Felix training-jobs REST API (FastAPI): `create_app(settings)`, `felix-train serve`.

Every endpoint of DESIGN.md's table, plus the datasets a job trains on:

| endpoint | |
|---|---|
| `POST /felix/training-jobs` | validate a spec (422 with field-level errors), create the job `requested`; 20/min/user |
| `GET /felix/training-jobs` | the user's jobs; filters `status`, `project_id`; `limit` 1-200 (200), `offset` (0) |
| `GET /felix/training-jobs/{id}` | status, configuration, progress; `metrics` only when `complete` |
| `GET /felix/training-jobs/{id}/logs` | train.log whole, or `?follow=true` streamed until the job ends |
| `GET /felix/training-jobs/{id}/checkpoints` | every checkpoint with its UUID (a valid `base_model`) |
| `GET /felix/training-jobs/{id}/download` | 409 unless `complete`; a URL with an expiring signed token |
| `GET /felix/training-jobs/{id}/download/file?token=` | the zip (or tar.gz) of `model/` |
| `POST /felix/training-jobs/{id}/stop` | graceful stop of a `running` job (then `cancelled`); else 409 |
| `POST /felix/training-jobs/{id}/deploy` | serve a `complete` job's model (else 409); `deployed` once healthy |
| `POST /felix/training-jobs/{id}/undeploy` | stop serving it: `complete` again (409 unless deployed or pending) |
| `DELETE /felix/training-jobs/{id}` | job, checkpoints, logs and files removed (a deployment stops) |
| `GET /felix/trained-models` | every `complete` or `deployed` model of the user |
| `POST /felix/trained-models/{id}/predict` | inference on a `deployed` model (409 otherwise; 422 names the field) |
| `GET /base-models` | the catalog |
| `POST /felix/datasets` | multipart upload; validated in the background: `processing` → `ready`/`failed` |
| `GET /felix/datasets`, `GET/DELETE /felix/datasets/{name}` | the user's datasets (and the built-ins) |

Auth is a bearer API key (`felix-train users add NAME`). Every resource belongs to a
user: another user's job id, dataset name, checkpoint UUID, download token or log
stream answers 404, exactly like one that does not exist.

Datasets are per user. The registry is shared (`$FELIX_HOME/datasets`), so a user's
dataset `ner` is registered as `u<user_id>--ner`; the API maps the names of a job's
datasets to registry names before validating it and stores the mapped spec (the one
the worker runs), and maps them back in every answer. User-facing dataset names are
at most 100 characters so the registry name fits its 128. Built-in datasets keep
their own names and are visible to every user (a user's own dataset of the same
name wins).

Deployment: `deploy` records the request in the store; a worker starts the job's inference
process (`felix_train.service.serving`) and marks the job `deployed` once it answers its health
check. `predict` validates the body with the serving module's request models (GLiNER2:
`text`/`texts` + `entities`/`schema`; LLMs: `messages`/`prompt`), then forwards it over
loopback to the port the store records for that job, and returns the process' answer.

The API only reads job folders and the store; jobs run and models are served in worker
processes, so this module never imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import difflib
import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Body,
    Depends,
    FastAPI,
    File,
    Form,
    Query,
    Request,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.openapi.utils import get_openapi
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from felix_train import __version__
from felix_train.catalog import CATALOG, BaseModelEntry, get_entry, is_checkpoint_uuid
from felix_train.checkpoints import find_checkpoint, list_checkpoints
from felix_train.data.formats import LineError
from felix_train.data.registry import DatasetManifest, DatasetRegistry, DatasetState
from felix_train.errors import (
    CheckpointNotFound,
    DatasetError,
    ErrorItem,
    FelixError,
    JobNotFound,
    SpecError,
)
from felix_train.jobs import JobFolder, JobStatus, felix_home
from felix_train.service.serving import (
    JOB_HEADER,
    SERVING_HOST,
    GLiNER2PredictRequest,
    LLMPredictRequest,
    PredictInputError,
    job_family,
    parse_predict_request,
    post_json,
    request_json,
)
from felix_train.service.store import Conflict, Job, NotFound, Store, User
from felix_train.spec import JobSpec, validate_spec

log = logging.getLogger("felix_train.api")

DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A user's dataset name: as the spec's, but at most 100 characters (the registry adds `u<id>--`)."""

PROJECT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
_NAMESPACE_RE = re.compile(r"\bu\d+--")


# -- settings -------------------------------------------------------------------------------------


class Settings(BaseModel):
    """How the API runs. `Settings.from_env()` reads `FELIX_*` variables."""

    home: Path = Field(description="`$FELIX_HOME`: job folders, datasets, models, the SQLite store.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite at `$FELIX_HOME/felix.db`.")
    secret_key: str | None = Field(None, description="HMAC key of download tokens; default `$FELIX_HOME/secret.key` "
                                   "(created once, shared by every API process on that home).")
    rate_limit_per_minute: int = Field(20, ge=1, description="Job submissions per user per minute.")
    download_ttl_s: int = Field(3600, ge=1, description="Lifetime of a download URL.")
    max_upload_bytes: int = Field(1 << 30, ge=1, description="Largest dataset upload.")
    log_follow_poll_s: float = Field(0.5, gt=0, description="How often a followed log looks for new lines.")
    public_url: str | None = Field(None, description="Base URL for download links (default: the request's).")
    predict_timeout_s: float = Field(300.0, gt=0, description="How long a forwarded predict may take.")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = {
            "home": felix_home(overrides.pop("home", None)),
            "database_url": os.environ.get("FELIX_DATABASE_URL"),
            "secret_key": os.environ.get("FELIX_SECRET_KEY"),
            "public_url": os.environ.get("FELIX_PUBLIC_URL"),
        }
        if os.environ.get("FELIX_RATE_LIMIT_PER_MINUTE"):
            env["rate_limit_per_minute"] = int(os.environ["FELIX_RATE_LIMIT_PER_MINUTE"])
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)


def _load_secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.home / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
    for _ in range(50):  # another process may be writing it this instant
        text = path.read_text().strip()
        if text:
            return text.encode("utf-8")
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it and restart, or set FELIX_SECRET_KEY")


# -- API errors (the store's are mapped too; see _install_handlers) --------------------------------


class NotAuthenticated(FelixError):
    """No or an unknown bearer API key."""


class RateLimited(FelixError):
    def __init__(self, retry_after_s: float, limit: int):
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limit: at most {limit} job submissions per minute; retry in "
                         f"{math.ceil(retry_after_s)} s")


class LinkExpired(FelixError):
    """A download token with a valid signature, past its expiry."""


class PayloadTooLarge(FelixError):
    pass


class ServingUnavailable(FelixError):
    """A `deployed` job's inference process did not answer (it is stopping, or just died)."""


# -- schemas ---------------------------------------------------------------------------------------


class TrainingJobCreate(JobSpec):
    """Properties to receive on job creation: the job spec.

    `engine.home`, `engine.job_id` and `engine.distributed.config` are set by the service and refused here.
    """


class ProgressPublic(BaseModel):
    step: int | None = 0
    total_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = None


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
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = Field(None, description="Final metrics; present only when `complete`.")
    stop_requested: bool = False
    deploy_requested: bool = Field(False, description="A deployment was asked for: `complete` while it starts, "
                                                      "then `deployed`; false again after undeploy or if it fails "
                                                      "(the reason is in the logs).")
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @model_serializer(mode="wrap")
    def _metrics_only_when_complete(self, handler):
        data = handler(self)
        if self.status != JobStatus.COMPLETE:
            data.pop("metrics", None)
        return data


class TrainingJobsPublic(BaseModel):
    data: list[TrainingJobPublic]
    count: int = Field(description="Jobs matching the filters (all pages).")


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


class DownloadPublic(BaseModel):
    url: str = Field(description="GET it (no auth header needed) before `expires_at` for the archive of `model/`.")
    expires_at: datetime
    format: str


class Message(BaseModel):
    success: bool = True
    message: str


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


class TrainedModelsPublic(BaseModel):
    data: list[TrainedModelPublic]
    count: int


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


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
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


class FormatEnum(str, Enum):
    ZIP = "zip"
    TAR_GZ = "tar.gz"


# -- dependencies ----------------------------------------------------------------------------------


_bearer = HTTPBearer(auto_error=False, description="An API key from `felix-train users add NAME`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]


def current_user(store: StoreDep,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("missing API key: send `Authorization: Bearer <key>` "
                               "(`felix-train users add NAME` creates one)")
    user = store.user_by_api_key(api_key=credentials.credentials)
    if user is None:
        raise NotAuthenticated("unknown API key; `felix-train users rotate NAME` issues a new one")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
JobId = Annotated[str, PathParam(description="The job id.")]


def submission_rate_limit(user: CurrentUser, store: StoreDep, settings: SettingsDep) -> None:
    retry = store.hit_rate_limit(user_id=user.id, key="create_job", limit=settings.rate_limit_per_minute,
                                 window_s=60.0)
    if retry is not None:
        raise RateLimited(retry, settings.rate_limit_per_minute)


# -- dataset namespaces ----------------------------------------------------------------------------


def registry_name(user_id: int, name: str) -> str:
    """The registry name of a user's dataset: `u<user_id>--<name>`."""
    return f"u{user_id}--{name}"


def _public_name(value: str) -> str:
    return _NAMESPACE_RE.sub("", value)


def _builtin_names(registry: DatasetRegistry) -> list[str]:
    return registry.builtin_names()


def _dataset_public(manifest: DatasetManifest | dict, name: str) -> DatasetPublic:
    data = manifest.model_dump(mode="json") if isinstance(manifest, BaseModel) else dict(manifest)
    data["name"] = name
    if data.get("error"):
        data["error"] = _public_name(data["error"])
    return DatasetPublic.model_validate({k: v for k, v in data.items() if k in DatasetPublic.model_fields})


# -- jobs: turning specs and rows into answers --------------------------------------------------------


def _public_spec(spec: dict) -> dict:
    """The stored (engine) spec as its owner wrote it: dataset names unmapped, internals dropped."""
    data = copy.deepcopy(spec)
    data.pop("catalog_model", None)
    for ds in data.get("datasets") or []:
        if isinstance(ds, dict) and isinstance(ds.get("name"), str):
            ds["name"] = _public_name(ds["name"])
    engine = data.get("engine") or {}
    engine.pop("home", None)
    ev = engine.get("eval") or {}
    if isinstance(ev.get("dataset"), str):
        ev["dataset"] = _public_name(ev["dataset"])
    return data


def job_public(job: Job) -> TrainingJobPublic:
    spec = job.spec or {}
    error = job.error
    if error:
        error = json.loads(_public_name(json.dumps(error)))
    return TrainingJobPublic(
        id=job.id, name=job.name, status=job.status, project_id=job.project_id,
        base_model=spec.get("base_model", ""), training_type=str(spec.get("training_type", "")),
        training_algorithm=str(spec.get("training_algorithm", "")), configuration=_public_spec(spec),
        progress=ProgressPublic.model_validate(job.progress) if job.progress else None, error=error,
        metrics=job.metrics, stop_requested=job.stop_requested, deploy_requested=bool(job.deploy_requested),
        attempts=job.attempts,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at)


def _prepare_spec(payload: Any, *, user: User, store: Store, settings: Settings,
                  registry: DatasetRegistry) -> tuple[dict, list[ErrorItem], dict[str, str]]:
    """Map a submitted spec onto the service: per-user dataset names, owned checkpoints, service-set fields.

    Returns the spec to validate, the errors found here, and `{registry name: user's name}`.
    """
    if not isinstance(payload, dict):
        got = type(payload).__name__ if payload is not None else "null"
        raise SpecError([ErrorItem((), f"the body must be a JSON object (a job spec), got {got}", "model_type")])
    data = copy.deepcopy(payload)
    errors: list[ErrorItem] = []
    engine = data.get("engine")
    if isinstance(engine, dict):
        for key in ("home", "job_id"):
            if engine.get(key) is not None:
                errors.append(ErrorItem(("engine", key), f"`engine.{key}` is set by the service; remove it",
                                        "service_managed"))
        dist = engine.get("distributed")
        if isinstance(dist, dict) and dist.get("config") is not None:
            errors.append(ErrorItem(("engine", "distributed", "config"), "`engine.distributed.config` names a file "
                                    "on the server and is set by the workers; remove it", "service_managed"))

    own = {d.name for d in store.list_datasets(owner_id=user.id)}
    builtins = set(_builtin_names(registry))
    names: dict[str, str] = {}

    def mapped(name: Any) -> Any:
        if not isinstance(name, str) or not re.match(DATASET_NAME_PATTERN, name):
            return name  # the spec's own validation reports it
        if name in builtins and name not in own:
            return name
        reg = registry_name(user.id, name)
        names[reg] = name
        return reg

    datasets = data.get("datasets")
    for ds in datasets if isinstance(datasets, list) else []:
        if isinstance(ds, dict) and "name" in ds:
            ds["name"] = mapped(ds["name"])
    ev = (engine or {}).get("eval") if isinstance(engine, dict) else None
    if isinstance(ev, dict) and ev.get("dataset") is not None:
        ev["dataset"] = mapped(ev["dataset"])

    base = data.get("base_model")
    if isinstance(base, str) and get_entry(base) is None and is_checkpoint_uuid(base):
        owned = False
        try:
            manifest, _ = find_checkpoint(base, settings.home)
            owned = store.job_owner(job_id=manifest.job_id) == user.id
        except CheckpointNotFound:
            pass
        if not owned:  # another user's checkpoint is unknown here: validate as if it did not exist
            data["base_model"] = str(uuid.uuid4())
            names[data["base_model"]] = base
    return data, errors, names


def _submitted(payload: Any, loc: tuple) -> Any:
    """The value at `loc` in the body as the user sent it (None when absent)."""
    for part in loc:
        try:
            payload = payload[part]
        except (KeyError, IndexError, TypeError):
            return None
    return payload


def _public_errors(errors: list[ErrorItem], payload: dict, names: dict[str, str],
                   user_names: list[str]) -> list[ErrorItem]:
    """Errors in the user's words: dataset and checkpoint names unmapped, nothing about others' resources."""
    out = []
    for e in errors:
        msg = e.msg
        if e.type == "dataset_not_found":
            wanted = _submitted(payload, e.loc)
            close = difflib.get_close_matches(str(wanted), user_names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            msg = f"no dataset named {wanted!r}; {hint}`GET /felix/datasets` lists yours"
        elif e.type == "unknown_checkpoint":
            msg = (f"unknown checkpoint {_submitted(payload, e.loc)!r}: none of your jobs has it; "
                   "`GET /felix/training-jobs/{id}/checkpoints` lists a job's checkpoint UUIDs")
        else:
            for reg, public in names.items():
                msg = msg.replace(reg, public)
            msg = _public_name(msg)
        out.append(ErrorItem(e.loc, msg, e.type))
    return out


def submit_job(*, payload: Any, user: User, store: Store, settings: Settings, registry: DatasetRegistry) -> Job:
    """Validate a spec against the user's datasets and create its job in `requested`.

    Raises:
        SpecError: every problem found, located in the spec.
    """
    data, errors, names = _prepare_spec(payload, user=user, store=store, settings=settings, registry=registry)
    try:
        resolved = validate_spec(data, home=settings.home)
    except SpecError as err:
        errors.extend(err.errors)
    if errors:
        user_names = [d.name for d in store.list_datasets(owner_id=user.id)] + _builtin_names(registry)
        raise SpecError(_public_errors(errors, payload, names, user_names))
    job_id = f"job-{uuid.uuid4().hex}"
    spec = resolved.to_json()
    spec["engine"]["job_id"] = job_id
    spec["engine"]["home"] = None
    return store.create_job(job_id=job_id, owner_id=user.id, name=resolved.name, spec=spec,
                            project_id=resolved.project_id)


# -- download tokens ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_download_token(secret: bytes, *, job_id: str, user_id: int, fmt: str, expires_at: float) -> str:
    """`<payload>.<HMAC-SHA256(payload)>`, both base64url; the payload names the job, user, format, expiry."""
    payload = _b64(json.dumps({"j": job_id, "u": user_id, "f": fmt, "e": int(expires_at)},
                              separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def read_download_token(secret: bytes, token: str, *, job_id: str, now: float | None = None) -> dict:
    """The token's claims if its signature is valid and it is for `job_id`.

    Raises:
        JobNotFound: malformed, tampered, or for another job (indistinguishable from no job).
        LinkExpired: genuine but past its expiry.
    """
    try:
        payload, sig = token.split(".")
        expected = _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            raise ValueError("bad signature")
        claims = json.loads(_unb64(payload))
        if claims["j"] != job_id or not isinstance(claims["u"], int):
            raise ValueError("another job")
    except (ValueError, KeyError, TypeError, UnicodeError) as err:
        raise JobNotFound(f"no download for job {job_id!r} with this token; `GET /felix/training-jobs/"
                          f"{job_id}/download` gives a fresh URL") from err
    if (now or time.time()) >= claims["e"]:
        expired = datetime.fromtimestamp(claims["e"], timezone.utc).isoformat()
        raise LinkExpired(f"this download URL expired at {expired}; `GET /felix/training-jobs/{job_id}/download` "
                          "gives a fresh one")
    return claims


_archive_lock = threading.Lock()


def model_archive(folder: JobFolder, fmt: FormatEnum) -> Path:
    """The archive of `model/`, built once per job and format (atomically) and reused."""
    suffix = "zip" if fmt == FormatEnum.ZIP else "tar.gz"
    target = folder.root / ".download" / f"model.{suffix}"
    with _archive_lock:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            files = sorted(p for p in folder.model_dir.rglob("*") if p.is_file())
            if fmt == FormatEnum.ZIP:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                    for p in files:
                        zf.write(p, Path("model") / p.relative_to(folder.model_dir))
            else:
                with tarfile.open(tmp, "w:gz", compresslevel=1) as tf:
                    for p in files:
                        tf.add(p, arcname=str(Path("model") / p.relative_to(folder.model_dir)))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


# -- routes ------------------------------------------------------------------------------------------

jobs_router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])
models_router = APIRouter(tags=["models"])
datasets_router = APIRouter(prefix="/felix/datasets", tags=["datasets"])


def get_registry(request: Request) -> DatasetRegistry:
    return request.app.state.registry


RegistryDep = Annotated[DatasetRegistry, Depends(get_registry)]


@jobs_router.post("", status_code=201, response_model=TrainingJobPublic,
                  dependencies=[Depends(submission_rate_limit)],
                  responses={422: {"description": "Every problem in the spec, located (`loc` starts with `body`)."},
                             429: {"description": "Over the per-user rate limit; see `Retry-After`."}})
def create_training_job(payload: Annotated[Any, Body()], user: CurrentUser, store: StoreDep,
                        settings: SettingsDep, registry: RegistryDep) -> TrainingJobPublic:
    """Validate a job spec against the user's datasets and queue the job (`requested`)."""
    job = submit_job(payload=payload, user=user, store=store, settings=settings, registry=registry)
    return job_public(job)


@jobs_router.get("", response_model=TrainingJobsPublic)
def list_training_jobs(user: CurrentUser, store: StoreDep,
                       status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
                       project_id: Annotated[str | None, Query(pattern=PROJECT_ID_PATTERN)] = None,
                       limit: Annotated[int, Query(ge=1, le=200)] = 200,
                       offset: Annotated[int, Query(ge=0)] = 0) -> TrainingJobsPublic:
    """The user's jobs, newest first."""
    rows, count = store.list_jobs(owner_id=user.id, status=status, project_id=project_id, limit=limit, offset=offset)
    return TrainingJobsPublic(data=[job_public(j) for j in rows], count=count)


@jobs_router.get("/{job_id}", response_model=TrainingJobPublic)
def get_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Status, configuration and progress; `metrics` once `complete`."""
    return job_public(store.get_job(job_id=job_id, owner_id=user.id))


@jobs_router.get("/{job_id}/logs", response_class=PlainTextResponse,
                 responses={200: {"content": {"text/plain": {}}, "description": "train.log"}})
async def get_training_job_logs(job_id: JobId, request: Request, user: CurrentUser, store: StoreDep,
                                settings: SettingsDep,
                                follow: Annotated[bool, Query(description="Stream until the job ends.")] = False):
    """The training log: whole, or followed (streamed) while the job is `requested` or `running`."""
    job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=user.id)
    path = JobFolder(job.id, settings.home).log_path
    if not follow:
        text = await asyncio.to_thread(_read_text, path)
        return PlainTextResponse(_public_name(text))
    return StreamingResponse(_follow_log(path, job.id, user.id, store, settings.log_follow_poll_s),
                             media_type="text/plain; charset=utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


async def _follow_log(path: Path, job_id: str, owner_id: int, store: Store, poll_s: float) -> AsyncIterator[bytes]:
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
        return _public_name(data[:cut].decode("utf-8", "replace")).encode("utf-8")

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


@jobs_router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_training_job_checkpoints(job_id: JobId, user: CurrentUser, store: StoreDep,
                                  settings: SettingsDep) -> CheckpointsPublic:
    """Every saved checkpoint, oldest first; each UUID is a valid `base_model` for a new job."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    items = [CheckpointPublic.model_validate(m.model_dump(exclude={"files", "job_id", "family"}))
             for m in list_checkpoints(JobFolder(job.id, settings.home))]
    return CheckpointsPublic(data=items, count=len(items))


@jobs_router.get("/{job_id}/download", response_model=DownloadPublic,
                 responses={409: {"description": "The job is not `complete`."}})
def get_training_job_download(job_id: JobId, request: Request, user: CurrentUser, store: StoreDep,
                              settings: SettingsDep,
                              format: Annotated[FormatEnum, Query(description="zip or tar.gz")] = FormatEnum.ZIP,
                              ) -> DownloadPublic:
    """A URL for the trained weights (an archive of `model/`), valid for `download_ttl_s` seconds."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    if job.status != JobStatus.COMPLETE:
        raise Conflict(f"job {job.id} is `{job.status.value}`; weights can be downloaded once it is `complete`")
    if not JobFolder(job.id, settings.home).model_dir.is_dir():
        raise Conflict(f"job {job.id} is complete but its `model/` folder is missing; train it again")
    expires = time.time() + settings.download_ttl_s
    token = make_download_token(request.app.state.secret, job_id=job.id, user_id=user.id, fmt=format.value,
                                expires_at=expires)
    url = request.url_for("download_training_job_file", job_id=job.id).include_query_params(token=token)
    if settings.public_url:
        url = f"{settings.public_url.rstrip('/')}{url.path}?{url.query}"
    return DownloadPublic(url=str(url), expires_at=datetime.fromtimestamp(int(expires), timezone.utc),
                          format=format.value)


@jobs_router.get("/{job_id}/download/file", name="download_training_job_file",
                 response_class=FileResponse,
                 responses={200: {"content": {"application/zip": {}, "application/gzip": {}}},
                            404: {"description": "Unknown, tampered or another user's token."},
                            410: {"description": "The URL expired."}})
def download_training_job_file(job_id: JobId, request: Request, store: StoreDep, settings: SettingsDep,
                               token: Annotated[str, Query(max_length=2048)],
                               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None):
    """The archive behind a download URL. The signed token is the credential; a sent API key must be its owner's."""
    claims = read_download_token(request.app.state.secret, token, job_id=job_id)
    if credentials is not None:
        caller = store.user_by_api_key(api_key=credentials.credentials)
        if caller is None or caller.id != claims["u"]:
            raise JobNotFound(f"no job {job_id!r}")
    job = store.get_job(job_id=job_id, owner_id=claims["u"])
    if job.status != JobStatus.COMPLETE:
        raise Conflict(f"job {job.id} is `{job.status.value}`; weights can be downloaded once it is `complete`")
    folder = JobFolder(job.id, settings.home)
    if not folder.model_dir.is_dir():
        raise Conflict(f"job {job.id} is complete but its `model/` folder is missing; train it again")
    fmt = FormatEnum(claims.get("f", "zip"))
    archive = model_archive(folder, fmt)
    media = "application/zip" if fmt == FormatEnum.ZIP else "application/gzip"
    return FileResponse(archive, media_type=media, filename=f"{job.id}-model.{fmt.value}")


@jobs_router.post("/{job_id}/stop", response_model=TrainingJobPublic,
                  responses={409: {"description": "The job is not `running`."}})
def stop_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Ask a `running` job to stop: it checkpoints, then ends `cancelled` (`stop_requested` until then)."""
    return job_public(store.request_stop(job_id=job_id, owner_id=user.id))


@jobs_router.post("/{job_id}/deploy", status_code=202, response_model=TrainingJobPublic,
                  responses={409: {"description": "The job is not `complete` (or is already `deployed`)."}})
def deploy_training_job(job_id: JobId, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> TrainingJobPublic:
    """Serve a `complete` job's model. A worker starts its inference process; the job is `deployed` once that
    answers its health check (`deploy_requested` until then; if it fails, `complete` again with the reason in
    the logs). Then `POST /felix/trained-models/{id}/predict`."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    if job.status == JobStatus.COMPLETE and not JobFolder(job.id, settings.home).model_dir.is_dir():
        raise Conflict(f"job {job.id} is complete but its `model/` folder is missing; train it again")
    return job_public(store.request_deploy(job_id=job_id, owner_id=user.id))


@jobs_router.post("/{job_id}/undeploy", response_model=TrainingJobPublic,
                  responses={409: {"description": "The job is neither `deployed` nor waiting to be."}})
def undeploy_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Stop serving the model: the job is `complete` again at once (predict answers 409), and its worker stops
    the inference process. Also cancels a pending deployment."""
    return job_public(store.request_undeploy(job_id=job_id, owner_id=user.id))


@jobs_router.delete("/{job_id}", response_model=Message,
                    responses={409: {"description": "The job is `running`: stop it first."}})
def delete_training_job(job_id: JobId, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Message:
    """Remove the job with its checkpoints, logs and files."""
    job = store.delete_job(job_id=job_id, owner_id=user.id)
    folder = JobFolder(job.id, settings.home)
    if folder.root.exists():
        shutil.rmtree(folder.root)
    return Message(message=f"job {job.id} ({job.name}) deleted with its checkpoints, logs and files")


@models_router.get("/felix/trained-models", response_model=TrainedModelsPublic)
def list_trained_models(user: CurrentUser, store: StoreDep, settings: SettingsDep) -> TrainedModelsPublic:
    """Every successfully trained model of the user (`complete` or `deployed`), newest first."""
    data = []
    offset = 0
    while True:
        rows, count = store.list_jobs(owner_id=user.id, status=(JobStatus.COMPLETE, JobStatus.DEPLOYED), limit=200,
                                      offset=offset)
        for job in rows:
            spec = job.spec or {}
            data.append(TrainedModelPublic(
                id=job.id, name=job.name, status=job.status, deploy_requested=bool(job.deploy_requested),
                base_model=spec.get("base_model", ""),
                training_type=str(spec.get("training_type", "")),
                training_algorithm=str(spec.get("training_algorithm", "")), project_id=job.project_id,
                metrics=job.metrics, created_at=job.created_at, finished_at=job.finished_at,
                checkpoints=[m.uuid for m in list_checkpoints(JobFolder(job.id, settings.home))],
                download=f"/felix/training-jobs/{job.id}/download",
                predict=f"/felix/trained-models/{job.id}/predict"))
        offset += len(rows)
        if not rows or offset >= count:
            break
    return TrainedModelsPublic(data=data, count=len(data))


@models_router.post("/felix/trained-models/{job_id}/predict", name="predict",
                    responses={200: {"description": "The model's answer.",
                                     "content": {"application/json": {"schema": {"oneOf": [
                                         {"$ref": "#/components/schemas/GLiNER2PredictPublic"},
                                         {"$ref": "#/components/schemas/LLMPredictPublic"}]}}}},
                               409: {"description": "The model is not `deployed`."},
                               422: {"description": "Every problem in the body, located (`loc` starts with `body`)."},
                               503: {"description": "The inference process did not answer; retry, or check the job."}})
def predict(job_id: JobId, payload: Annotated[Any, Body()], user: CurrentUser, store: StoreDep,
            settings: SettingsDep) -> JSONResponse:
    """Run a deployed model. GLiNER2: `text` or `texts`, `entities` or `schema`, `threshold`; LLMs: `messages` or
    `prompt`, `max_new_tokens`, `temperature`. The body is checked here, then forwarded to the job's inference
    process."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    request = parse_predict_request(job_family(job.spec), payload)
    if job.status != JobStatus.DEPLOYED or not job.serving_port:
        pending = " (its deployment is starting)" if job.deploy_requested and job.status == JobStatus.COMPLETE else ""
        raise Conflict(f"model {job.id} is `{job.status.value}`{pending}, not `deployed`; "
                       f"`POST /felix/training-jobs/{job.id}/deploy` serves it")
    try:
        status, body = post_json(SERVING_HOST, job.serving_port, "/predict", request_json(request),
                                 headers={JOB_HEADER: job.id}, timeout_s=settings.predict_timeout_s)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ServingUnavailable(f"the inference process of model {job.id} did not answer ({type(err).__name__}: "
                                 f"{err}); retry, or `GET /felix/training-jobs/{job.id}` for its status") from err
    if status == 421:  # the port now belongs to another job's process: this one is gone
        raise ServingUnavailable(f"the inference process of model {job.id} is gone; "
                                 f"`GET /felix/training-jobs/{job.id}` shows its status")
    return JSONResponse(body, status_code=status)


@models_router.get("/base-models", response_model=list[BaseModelPublic])
def list_base_models(user: CurrentUser) -> list[BaseModelPublic]:
    """The supported base models and what each allows (training types, algorithms, defaults)."""
    return [_base_model_public(e) for e in CATALOG]


def _base_model_public(e: BaseModelEntry) -> BaseModelPublic:
    return BaseModelPublic(
        id=e.id, family=e.family.value, description=e.description,
        training_types=[t.value for t in e.training_types], algorithms=[a.value for a in e.algorithms],
        rl_verified=e.rl_verified, default_num_epochs=e.default_num_epochs,
        default_learning_rate={k.value: v for k, v in e.default_learning_rate.items()},
        default_batch_size=e.default_batch_size, default_max_length=e.default_max_length)


# -- datasets ----------------------------------------------------------------------------------------


def validate_dataset(store: Store, registry: DatasetRegistry, owner_id: int, name: str) -> None:
    """Background half of an upload: validate the file, record `ready` or `failed` with its line errors."""
    reg = registry_name(owner_id, name)
    try:
        manifest = registry.validate(reg)
    except DatasetError as err:  # deleted meanwhile
        log.info("dataset %s of user %s: %s", name, owner_id, err)
        return
    except Exception as err:  # noqa: BLE001 - recorded as the dataset's failure, never lost
        log.exception("dataset %s of user %s: validation crashed", name, owner_id)
        store.update_dataset(owner_id=owner_id, name=name, state=DatasetState.FAILED.value,
                             manifest={"name": reg, "state": DatasetState.FAILED.value,
                                       "error": f"validation crashed: {type(err).__name__}: {err}"})
        return
    store.update_dataset(owner_id=owner_id, name=name, state=manifest.state.value,
                         manifest=manifest.model_dump(mode="json"))


@datasets_router.post("", status_code=202, response_model=DatasetPublic,
                      responses={409: {"description": "A dataset of that name exists (pass `overwrite`)."},
                                 413: {"description": "The file is over the upload limit."}})
def upload_dataset(background: BackgroundTasks, user: CurrentUser, store: StoreDep, settings: SettingsDep,
                   registry: RegistryDep,
                   name: Annotated[str, Form(pattern=DATASET_NAME_PATTERN, description="The dataset's name.")],
                   file: Annotated[UploadFile, File(description="A JSONL file, one record per line.")],
                   overwrite: Annotated[bool, Form(description="Replace a dataset of that name.")] = False,
                   ) -> DatasetPublic:
    """Upload a JSONL dataset. It is `processing` until validated in the background, then `ready` or `failed`."""
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the file is {file.size} bytes; the limit is {settings.max_upload_bytes}")
    if not overwrite:
        try:
            store.get_dataset(owner_id=user.id, name=name)
        except NotFound:
            pass
        else:
            raise Conflict(f"dataset {name!r} exists; upload with `overwrite=true` to replace it, or pick another name")
    else:
        _refuse_if_in_use(store, user.id, name)
    reg = registry_name(user.id, name)
    manifest = registry.register_processing(reg, file.file, overwrite=True, source=file.filename or "upload.jsonl")
    store.create_dataset(owner_id=user.id, name=name, state=manifest.state.value,
                         manifest=manifest.model_dump(mode="json"), replace=True)
    background.add_task(validate_dataset, store, registry, user.id, name)
    return _dataset_public(manifest, name)


@datasets_router.get("", response_model=DatasetsPublic)
def list_datasets(user: CurrentUser, store: StoreDep, registry: RegistryDep) -> DatasetsPublic:
    """The user's datasets, then the built-in ones."""
    rows = store.list_datasets(owner_id=user.id)
    data = [_dataset_public(r.manifest or {"state": r.state}, r.name) for r in rows]
    own = {r.name for r in rows}
    for name in _builtin_names(registry):
        if name not in own:
            data.append(_dataset_public(registry.get(name), name))
    return DatasetsPublic(data=data, count=len(data))


@datasets_router.get("/{name}", response_model=DatasetPublic)
def get_dataset(name: str, user: CurrentUser, store: StoreDep, registry: RegistryDep) -> DatasetPublic:
    """One dataset: state, format, counts, and the bad lines when `failed`."""
    try:
        row = store.get_dataset(owner_id=user.id, name=name)
    except NotFound:
        if re.match(DATASET_NAME_PATTERN, name) and name in _builtin_names(registry):
            return _dataset_public(registry.get(name), name)
        raise
    return _dataset_public(row.manifest or {"state": row.state}, row.name)


@datasets_router.delete("/{name}", response_model=Message,
                        responses={409: {"description": "A queued or running job of the user trains on it."}})
def delete_dataset(name: str, user: CurrentUser, store: StoreDep, registry: RegistryDep) -> Message:
    """Remove one of the user's datasets (not while a queued or running job uses it)."""
    store.get_dataset(owner_id=user.id, name=name)
    _refuse_if_in_use(store, user.id, name)
    try:
        registry.delete(registry_name(user.id, name))
    except DatasetError:
        pass  # the file was already gone: the row is what remains
    store.delete_dataset(owner_id=user.id, name=name)
    return Message(message=f"dataset {name!r} deleted")


def _refuse_if_in_use(store: Store, user_id: int, name: str) -> None:
    reg = registry_name(user_id, name)
    for status in (JobStatus.REQUESTED, JobStatus.RUNNING):
        rows, _ = store.list_jobs(owner_id=user_id, status=status, limit=200)
        for job in rows:
            spec = job.spec or {}
            used = {d.get("name") for d in spec.get("datasets") or []}
            used.add(((spec.get("engine") or {}).get("eval") or {}).get("dataset"))
            if reg in used:
                raise Conflict(f"dataset {name!r} is used by job {job.id} ({status.value}); wait for it to end "
                               "or stop it first")


# -- the app -----------------------------------------------------------------------------------------


def _install_handlers(app: FastAPI) -> None:
    def detail(status: int, exc: Exception, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(request: Request, exc: NotAuthenticated):
        return detail(401, exc, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(JobNotFound)
    async def _job_not_found(request: Request, exc: JobNotFound):
        return detail(404, exc)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return detail(404, exc)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return detail(409, exc)

    @app.exception_handler(LinkExpired)
    async def _expired(request: Request, exc: LinkExpired):
        return detail(410, exc)

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(request: Request, exc: PayloadTooLarge):
        return detail(413, exc)

    @app.exception_handler(PredictInputError)
    async def _predict_input(request: Request, exc: PredictInputError):
        return JSONResponse({"detail": exc.to_list()}, status_code=422)

    @app.exception_handler(ServingUnavailable)
    async def _serving_unavailable(request: Request, exc: ServingUnavailable):
        return detail(503, exc, {"Retry-After": "1"})

    @app.exception_handler(SpecError)
    async def _spec_error(request: Request, exc: SpecError):
        items = [{"loc": ["body", *e.loc], "msg": e.msg, "type": e.type} for e in exc.errors]
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(DatasetError)
    async def _dataset_error(request: Request, exc: DatasetError):
        return JSONResponse({"detail": _public_name(str(exc))}, status_code=422)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited):
        return detail(429, exc, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})


def _install_openapi(app: FastAPI) -> None:
    """The job body is validated by `validate_spec` (for its located errors); document it as TrainingJobCreate."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        body = TrainingJobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["TrainingJobCreate"] = body
        schema["paths"]["/felix/training-jobs"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TrainingJobCreate"}}},
        }
        # predict: the body depends on the model's family (validated by the serving module's models)
        for model in (GLiNER2PredictRequest, LLMPredictRequest, GLiNER2PredictPublic, LLMPredictPublic):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        schema["paths"]["/felix/trained-models/{job_id}/predict"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/GLiNER2PredictRequest"},
                {"$ref": "#/components/schemas/LLMPredictRequest"}]}}},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _revalidate_processing(store: Store, registry: DatasetRegistry) -> None:
    """Datasets left `processing` by a stopped API process are validated again at startup."""
    for row in store.datasets_in_state(state=DatasetState.PROCESSING.value):
        validate_dataset(store, registry, row.owner_id, row.name)


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The API over `settings.home` and the store at `settings.database_url` (or the given `store`)."""
    settings = settings or Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = threading.Thread(target=_revalidate_processing, args=(app.state.store, app.state.registry),
                                  name="felix-dataset-revalidate", daemon=True)
        thread.start()
        yield
        if own_store:
            app.state.store.close()

    app = FastAPI(title="Felix training jobs", version=__version__, lifespan=lifespan,
                  description="Fine-tune GLiNER2 encoders and decoder LLMs: submit a job spec, follow its logs, "
                              "download the trained weights. Authenticate with `Authorization: Bearer <API key>`.")
    own_store = store is None
    app.state.settings = settings
    app.state.store = store or Store(settings.database_url, home=settings.home)
    app.state.registry = DatasetRegistry(settings.home)
    app.state.secret = _load_secret(settings)
    app.include_router(jobs_router)
    app.include_router(models_router)
    app.include_router(datasets_router)
    _install_handlers(app)
    _install_openapi(app)
    return app


# -- `felix-train serve` -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="felix-train serve", description="Serve the Felix training-jobs REST API "
                                "(OpenAPI docs at /docs).")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--home", default=None, help="$FELIX_HOME (default ~/.felix)")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL (default $FELIX_DATABASE_URL, else SQLite at $FELIX_HOME/felix.db)")
    p.add_argument("--public-url", default=None, help="base URL for download links (default: the request's)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)

    import uvicorn

    settings = Settings.from_env(home=args.home, database_url=args.database_url, public_url=args.public_url)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
