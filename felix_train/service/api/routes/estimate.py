"""`POST /felix/training-jobs/estimate`: a dry run. The job body, validated exactly as job creation validates it
(`submission.prepare_spec` + `validate_spec`: the same 422s, the user's own datasets and checkpoints only), then
`felix_train.estimate` answers; nothing is queued. Without a throughput-table row the time is left out
(`time.basis.source: none`) rather than a probe run inside a request.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from felix_train.errors import DatasetError, ErrorItem, SpecError
from felix_train.service.api.deps import CurrentUser, SettingsDep, StoreDep, UserRegistryDep, submission_rate_limit
from felix_train.service.api.routes.jobs import JobSpecBody
from felix_train.service.api.submission import prepare_spec, public_errors
from felix_train.spec import validate_spec

router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])

EXAMPLE = {
    "base_model": "felix/gliner2-minilm-l6", "training_type": "lora", "training_algorithm": "sft",
    "device": "cpu-amd-epyc-2t", "precision": "fp32", "unit": "words",
    "datasets": {"felix-ner-quickstart": {
        "train": {"records": 810, "tokens": 11665, "truncated": 0, "dropped": 0, "reasons": {}},
        "eval": {"records": 90, "tokens": 1297, "truncated": 0, "dropped": 0, "reasons": {}}}},
    "records": {"train": 810, "eval": 90}, "tokens": {"train_per_epoch": 11665, "trained": 58325},
    "trained_records": 4050, "steps": 510, "steps_per_epoch": 102, "epochs": 5, "exact": True,
    "time": {"wall_s": 262.0, "train_s": 240.1, "overhead_s": 21.9, "s_per_step": 0.471,
             "basis": {"source": "job", "matched": "exact", "unit": "samples", "units_per_s": 16.87,
                       "key": "felix/gliner2-minilm-l6|sft|lora|cpu-amd-epyc-2t|fp32"}},
    "memory": {"peak_mb": 1450.0, "formula_mb": 279.2, "baseline_mb": 1170.8, "weights_mb": 114.9,
               "gradients_mb": 30.8, "optimizer_mb": 61.7, "activations_mb": 71.8, "parameters": 30125205,
               "trainable_parameters": 8083989, "batch_shape": [8, 45]},
    "hyperparameters": {"num_epochs": 5, "learning_rate": 0.002, "batch_size": 8, "max_length": 256,
                        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["encoder"]}},
    "notes": ["eval split unseen_mention: 77 eval records with entities, none of whose mentions occurs in training"],
}


@router.post("/estimate", dependencies=[Depends(submission_rate_limit)],
             responses={200: {"description": "The estimate; nothing is queued.",
                              "content": {"application/json": {"example": EXAMPLE}}},
                        422: {"description": "As for `POST /felix/training-jobs`, plus records over `max_length` "
                                             "under `length_policy: error` (`record_too_long`, with dataset and line)."},
                        429: {"description": "Over the per-user rate limit (shared with job creation)."}})
async def estimate_training_job(payload: JobSpecBody, user: CurrentUser, store: StoreDep, settings: SettingsDep,
                                registry: UserRegistryDep) -> dict[str, Any]:
    """Records and tokens per dataset after the length policy, steps and epochs, predicted wall time and peak
    memory, and the resolved hyperparameters of a job body, without queueing it."""
    return await run_in_threadpool(_estimate, payload, user, store, settings, registry)


def _estimate(payload, user, store, settings, registry) -> dict[str, Any]:
    from felix_train.estimate import estimate

    data, errors, substitutes = prepare_spec(payload, user=user, store=store, settings=settings)
    resolved = None
    try:
        resolved = validate_spec(data, home=settings.home)
    except SpecError as err:
        errors.extend(err.errors)
    if not errors:
        try:
            return estimate(resolved, home=settings.home, probe=False, materialise=False)
        except DatasetError as err:
            errors.extend(err.errors or [ErrorItem(("datasets",), str(err), "dataset_invalid")])
    user_names = [d.name for d in store.list_datasets(owner_id=user.id)] + registry.builtin_names()
    raise SpecError(public_errors(errors, payload, substitutes, user_names))
