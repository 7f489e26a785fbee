"""`GET /felix/training-jobs/{id}/metrics`: the time series of a job's logged metrics (metrics.jsonl), for a dashboard.

Each row is one logging step as the trainer logged it: `step`, `epoch`, `time` and the figures (`loss`,
`learning_rate`, `grad_norm`, `eval_loss`, `eval_f1`, `reward`, …; a row has the keys its trainer logged). `keys=`
keeps only those figures (rows with none of them are left out), `after_step=` only later steps (a dashboard polls
with the last step it has). A resumed job's rows past its checkpoint were cut by the runner: no step twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from felix_train.jobs import JobFolder
from felix_train.jsonl import JSONLError, iter_jsonl_lines
from felix_train.service.api.deps import CurrentUser, JobId, SettingsDep, StoreDep

router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])

ROW_KEYS = ("step", "epoch", "time")
"""Every row keeps these, whatever `keys=` asks for."""

_EXAMPLE = {
    "data": [
        {"step": 10, "epoch": 0.25, "time": "2025-01-01T12:00:05Z", "loss": 0.8123, "learning_rate": 4.5e-05,
         "grad_norm": 1.93},
        {"step": 20, "epoch": 0.5, "time": "2025-01-01T12:00:09Z", "eval_loss": 0.7012, "eval_f1": 0.61},
    ],
    "count": 2, "has_more": False, "keys": ["eval_f1", "eval_loss", "grad_norm", "learning_rate", "loss"],
}


# The logged metrics of a job
class MetricsPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    data: list[dict[str, Any]] = Field(description="One row per logged step (train and eval rows apart), oldest "
                                                   "first: `step`, `epoch`, `time` and the figures.")
    count: int = Field(description="Rows in `data`.")
    has_more: bool = Field(description="More rows follow: ask again with `after_step` = the last row's step.")
    keys: list[str] = Field(description="Every figure name in `data`, sorted (what a dashboard can plot).")


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses={404: {"description": "No such job of "
                                                                                               "this user."}})
async def get_training_job_metrics(
        job_id: JobId, user: CurrentUser, store: StoreDep, settings: SettingsDep,
        keys: Annotated[list[str] | None, Query(description="Only these figures (repeatable or comma-separated), "
                                                            "e.g. `keys=loss,eval_f1`.")] = None,
        after_step: Annotated[int | None, Query(ge=0, description="Only rows of later steps.")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000) -> MetricsPublic:
    """The logged metrics over the steps (loss, learning rate, eval F1 or eval loss, reward, …)."""
    job = await asyncio.to_thread(store.get_job, job_id=job_id, owner_id=user.id)
    wanted = {k.strip() for item in keys or [] for k in item.split(",") if k.strip()} or None
    rows = await asyncio.to_thread(read_metrics, JobFolder(job.id, settings.home).metrics_path,
                                   keys=wanted, after_step=after_step, limit=limit + 1)
    page = rows[:limit]
    names = sorted({k for r in page for k in r if k not in ROW_KEYS})
    return MetricsPublic(data=page, count=len(page), has_more=len(rows) > limit, keys=names)


def read_metrics(path: Path, *, keys: set[str] | None = None, after_step: int | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl's rows (a torn or unreadable line skipped), filtered by `keys` and `after_step`."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for _, row in iter_jsonl_lines(path):
        if isinstance(row, JSONLError) or not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        if after_step is not None and row["step"] <= after_step:
            continue
        if keys is not None:
            figures = {k: v for k, v in row.items() if k in keys}
            if not figures:
                continue
            row = {**{k: row.get(k) for k in ROW_KEYS}, **figures}
        out.append(row)
        if limit is not None and len(out) >= limit:
            break
    return out
