"""`felix-train estimate SPEC` and `POST /felix/training-jobs/estimate`: a job's cost before it runs.

`estimate(spec, home=..., device=...)` validates the spec as job creation does, then says: records and tokens
per dataset after the length policy (`counting`), steps and epochs (the trainers' formulas), the predicted
wall time on this machine (`table`: a measured row per model, algorithm, training type, device and precision;
else a short measured `probe` of the job, marked so), the predicted peak memory (`perf.memory`) and the resolved
hyperparameters; for SFT and DPO also how the job will split its batches to fit (`perf.micro_batches`, the rule
the trainers run). With a table row nothing here imports torch (the probe's child process does).
`check_lengths(spec, home)` is `felix-train validate`'s length check (policy `error`: refused with file and line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from felix_train.estimate.counting import Counts, count
from felix_train.estimate.table import find_row, resolved_precision
from felix_train.perf.memory import predict_memory
from felix_train.perf.micro_batches import rows_per_example
from felix_train.spec import JobSpec, LengthPolicy


def check_lengths(spec: JobSpec, home=None, *, materialise: bool = True) -> None:
    """DatasetError (items `record_too_long`, file and line) where `length_policy: error` refuses a record.
    `materialise=False` (the API) never builds or converts the model to read its tokenizer (see `count`)."""
    if spec.engine.length_policy == LengthPolicy.ERROR:
        count(spec, home=home, materialise=materialise)


def default_device() -> str:
    """`cuda` where an NVIDIA GPU is visible (no torch needed to look), else `cpu`."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    return "cuda" if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()) else "cpu"


def predict_time(counts: Counts, row: dict) -> dict:
    units = counts.trained_records if row["unit"] == "samples" else (counts.trained_tokens or 0)
    train_s = units / row["units_per_s"] if row["units_per_s"] else None
    return {"wall_s": round(train_s + row.get("overhead_s", 0.0), 1) if train_s is not None else None,
            "train_s": round(train_s, 1) if train_s is not None else None, "overhead_s": row.get("overhead_s"),
            "s_per_step": round(train_s / counts.total_steps, 3) if train_s and counts.total_steps else None,
            "basis": {k: row.get(k) for k in ("source", "matched", "key", "unit", "units_per_s", "s_per_step",
                                             "batch_size", "gradient_accumulation_steps", "num_processes",
                                             "job_id", "updated_at", "probe_steps") if row.get(k) is not None}}


def estimate(spec: JobSpec, *, home=None, device: str | None = None, probe: bool = True,
             materialise: bool = True) -> dict[str, Any]:
    """The estimate of a resolved spec (see the module docstring); DatasetError where validation would refuse.
    `materialise=False` (the API process, which never loads torch) leaves out what needs a model not yet on disk
    (tokens of LLM records, the memory prediction) instead of building it."""
    from felix_train.models import ready_model, resolve_model

    device = device or default_device()
    entry = spec.entry()
    model_path = resolve_model(entry, home) if materialise else ready_model(entry, home)
    counts = count(spec, home=home, model_path=model_path, materialise=materialise)
    precision = resolved_precision(spec.engine.precision, device)
    from felix_train.estimate.table import device_name

    dev = device_name(device)
    row = find_row(entry.id, spec.training_algorithm.value, spec.training_type.value, dev, precision, home)
    if row is None and probe:
        from felix_train.estimate.probe import probe as run_probe

        row = run_probe(spec.to_json(), home)
    seq = min(counts.max_length_seen or spec.engine.max_length, spec.engine.max_length)
    baseline = None
    if row is not None and row.get("peak_rss_mb") and row.get("formula_mb") is not None:
        baseline = max(0.0, row["peak_rss_mb"] - row["formula_mb"])
    memory = None if model_path is None else predict_memory(
        Path(model_path), family=entry.family.value, training_type=spec.training_type.value,
        lora_r=spec.engine.lora.r, targets=spec.engine.lora.target_modules,
        batch_size=spec.engine.batch_size * rows_per_example(spec), seq_len=seq, bf16_base=precision == "bf16",
        baseline_mb=baseline, checkpointing=spec.engine.gradient_checkpointing)
    if memory is not None:
        plan = micro_batches(spec, Path(model_path), longest=seq, device=device, bf16=precision == "bf16",
                             baseline_mb=baseline)
        if plan is not None:
            memory["micro_batches"] = plan
    time = predict_time(counts, row) if row else {"wall_s": None, "basis": {"source": "none"}}
    return {
        "base_model": entry.id, "training_type": spec.training_type.value,
        "training_algorithm": spec.training_algorithm.value, "device": dev, "precision": precision,
        "datasets": counts.per_dataset, "unit": counts.unit,
        "records": {"train": counts.train_records, "eval": counts.eval_records},
        "tokens": {"train_per_epoch": counts.train_tokens, "trained": counts.trained_tokens},
        "trained_records": counts.trained_records, "steps": counts.total_steps,
        "steps_per_epoch": counts.steps_per_epoch, "epochs": counts.epochs, "exact": counts.exact,
        "time": time, "budget": budget_fit(spec, counts, time),
        "memory": memory, "hyperparameters": spec.hyperparameters(), "notes": counts.notes,
    }


def micro_batches(spec: JobSpec, model_path: Path, *, longest: int, device: str, bf16: bool,
                  baseline_mb: float | None) -> dict[str, Any] | None:
    """How an SFT or DPO job will split its batches to fit in memory (`perf.micro_batches`, the rule the job runs),
    for the longest record; None for other jobs, or on a GPU without `FELIX_MEMORY_LIMIT_MB` (reading the GPU's
    memory would import torch)."""
    from felix_train.errors import DatasetError
    from felix_train.perf.micro_batches import MEMORY_LIMIT_ENV, job_memory_limit_mb, plan_for

    if spec.entry().family.value != "causal_lm" or spec.training_algorithm.value not in ("sft", "dpo"):
        return None
    if device != "cpu" and not os.environ.get(MEMORY_LIMIT_ENV):
        return None
    limit = job_memory_limit_mb(device)
    if limit is None:
        return None
    try:
        plan = plan_for(spec, model_path, longest=longest, limit_mb=limit, bf16=bf16, baseline_mb=baseline_mb)
    except DatasetError as err:
        return {"fits": False, "limit_mb": round(limit, 1), "error": str(err)}
    return {"fits": True, "limit_mb": round(limit, 1), "budget_mb": round(plan.budget_mb, 1),
            "micro_batch": plan.micro_batch, "splits": plan.splits, "checkpointing": plan.checkpointing,
            "predicted_peak_mb": round(plan.peak_mb, 1),
            "summary": plan.describe(spec.engine.batch_size, rows_per_example(spec))}


def budget_fit(spec: JobSpec, counts: Counts, time: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the job fits its `engine.max_time` / `max_tokens` (None where it sets neither): per budget the
    limit, the predicted use (training time without start-up and export, as the budget counts it; trained tokens,
    samples for GLiNER2) and `fits` (None where the use cannot be predicted). A job that does not fit still runs:
    it stops at the budget with its model."""
    eng = spec.engine
    out: dict[str, Any] = {}
    if eng.max_time is not None:
        used = time.get("train_s")
        out["max_time"] = {"limit": eng.max_time, "predicted": used,
                           "fits": None if used is None else used <= eng.max_time}
    if eng.max_tokens is not None:
        gliner2 = spec.entry().family.value == "gliner2"  # GLiNER2 budgets count samples (records), as it trains
        used = counts.trained_records if gliner2 else counts.trained_tokens
        out["max_tokens"] = {"limit": eng.max_tokens, "predicted": used,
                             "fits": None if used is None else used <= eng.max_tokens}
    return out or None


def memory_formula_mb(spec: JobSpec, home=None, *, max_length_seen: int | None = None) -> float:
    """The formula part of the memory prediction for a job (the runner stores it beside the measured peak)."""
    from felix_train.models import resolve_model

    entry = spec.entry()
    seq = min(max_length_seen or spec.engine.max_length, spec.engine.max_length)
    return predict_memory(Path(resolve_model(entry, home)), family=entry.family.value,
                          training_type=spec.training_type.value, lora_r=spec.engine.lora.r,
                          targets=spec.engine.lora.target_modules,
                          batch_size=spec.engine.batch_size * rows_per_example(spec), seq_len=seq,
                          checkpointing=spec.engine.gradient_checkpointing)["formula_mb"]


def record_completed(spec: JobSpec, metrics: dict[str, Any], *, device: str, wall_s: float | None, job_id: str,
                     home=None) -> dict | None:
    """The runner's call at completion: the job's throughput-table row, with the memory formula's part beside
    the measured peak (so the next estimate's baseline is this machine's)."""
    from felix_train.estimate.table import record_job

    formula = None
    try:
        counts = count(spec, home=home)
        formula = memory_formula_mb(spec, home, max_length_seen=counts.max_length_seen)
    except Exception:  # noqa: BLE001 - the row is still worth writing without the formula
        formula = None
    return record_job(spec, metrics, device=device, wall_s=wall_s, job_id=job_id, home=home, formula_mb=formula)
