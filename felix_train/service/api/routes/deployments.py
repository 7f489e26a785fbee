"""Serving trained models: `deploy`/`undeploy` a job, list the user's trained models, and `predict`.

`deploy` records the request in the store; a worker starts the job's inference process
(`felix_train.service.serving`) and marks the job `deployed` once it answers its health check. `predict`
validates the body with the serving module's request models (GLiNER2: `text`/`texts` + `entities`/`schema`;
LLMs: `messages`/`prompt`), forwards it over loopback to the port the store records for that job, with the
deployment's secret (`felix_train.service.serving.auth`: the process answers nobody else), and returns the
process' answer.
"""

from __future__ import annotations

import http.client
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import PlainValidator

from felix_train.checkpoints import list_checkpoints
from felix_train.jobs import JobFolder, JobStatus
from felix_train.service.api.deps import CurrentUser, JobId, SettingsDep, StoreDep
from felix_train.service.api.errors import ServingUnavailable
from felix_train.service.api.schemas import (
    GLiNER2PredictPublic,
    LLMPredictPublic,
    TrainedModelPublic,
    TrainedModelsPublic,
    TrainingJobPublic,
)
from felix_train.service.serving import (
    JOB_HEADER,
    SERVING_HOST,
    GLiNER2PredictRequest,
    LLMPredictRequest,
    job_family,
    parse_predict_request,
    auth_headers,
    post_json,
    read_deployment_secret,
    request_json,
)
from felix_train.service.store import Conflict

router = APIRouter()

PredictBody = Annotated[Any, PlainValidator(lambda v: v, json_schema_input_type=GLiNER2PredictRequest | LLMPredictRequest),
                        Body()]
"""Documented as either request model; which one applies depends on the model's family (checked in the route)."""


@router.post("/felix/training-jobs/{job_id}/deploy", status_code=202, response_model=TrainingJobPublic,
             tags=["training jobs"],
             responses={409: {"description": "The job is not `complete` (or is already `deployed`)."}})
def deploy_training_job(job_id: JobId, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> TrainingJobPublic:
    """Serve a `complete` job's model. A worker starts its inference process; the job is `deployed` once that
    answers its health check (`deploy_requested` until then; if it fails, `complete` again with the reason in
    the logs). Then `POST /felix/trained-models/{id}/predict`."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    if job.status == JobStatus.COMPLETE and not JobFolder(job.id, settings.home).model_dir.is_dir():
        raise Conflict(f"job {job.id} is complete but its `model/` folder is missing; train it again")
    return TrainingJobPublic.from_job(store.request_deploy(job_id=job_id, owner_id=user.id))


@router.post("/felix/training-jobs/{job_id}/undeploy", response_model=TrainingJobPublic, tags=["training jobs"],
             responses={409: {"description": "The job is neither `deployed` nor waiting to be."}})
def undeploy_training_job(job_id: JobId, user: CurrentUser, store: StoreDep) -> TrainingJobPublic:
    """Stop serving the model: the job is `complete` again at once (predict answers 409), and its worker stops
    the inference process. Also cancels a pending deployment."""
    return TrainingJobPublic.from_job(store.request_undeploy(job_id=job_id, owner_id=user.id))


@router.get("/felix/trained-models", response_model=TrainedModelsPublic, tags=["models"])
def list_trained_models(user: CurrentUser, store: StoreDep, settings: SettingsDep) -> TrainedModelsPublic:
    """Every successfully trained model of the user (`complete` or `deployed`), newest first."""
    data = []
    offset = 0
    while True:
        rows, count = store.list_jobs(owner_id=user.id, status=(JobStatus.COMPLETE, JobStatus.DEPLOYED), limit=200,
                                      offset=offset)
        for job in rows:
            checkpoints = [m.uuid for m in list_checkpoints(JobFolder(job.id, settings.home))]
            data.append(TrainedModelPublic.from_job(job, checkpoints))
        offset += len(rows)
        if not rows or offset >= count:
            break
    return TrainedModelsPublic(data=data, count=len(data))


@router.post("/felix/trained-models/{job_id}/predict", name="predict", tags=["models"],
             response_model=GLiNER2PredictPublic | LLMPredictPublic, response_description="The model's answer.",
             responses={409: {"description": "The model is not `deployed`."},
                        413: {"description": "The body is over `FELIX_MAX_BODY_BYTES` (1 MiB)."},
                        422: {"description": "Every problem in the body, located (`loc` starts with `body`)."},
                        503: {"description": "The inference process did not answer; retry, or check the job."}})
def predict(job_id: JobId, payload: PredictBody, user: CurrentUser, store: StoreDep,
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
    secret = read_deployment_secret(JobFolder(job.id, settings.home).root, job.deployment_id)
    if secret is None:  # the deployment ended (or is being replaced) since the row was read
        raise ServingUnavailable(f"the inference process of model {job.id} is gone; "
                                 f"`GET /felix/training-jobs/{job.id}` shows its status")
    try:
        status, body = post_json(SERVING_HOST, job.serving_port, "/predict", request_json(request),
                                 headers={JOB_HEADER: job.id, **auth_headers(secret)},
                                 timeout_s=settings.predict_timeout_s)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ServingUnavailable(f"the inference process of model {job.id} did not answer ({type(err).__name__}: "
                                 f"{err}); retry, or `GET /felix/training-jobs/{job.id}` for its status") from err
    if status in (401, 421):  # the port now belongs to another deployment's or another job's process: this one is gone
        raise ServingUnavailable(f"the inference process of model {job.id} is gone; "
                                 f"`GET /felix/training-jobs/{job.id}` shows its status")
    return JSONResponse(body, status_code=status)
