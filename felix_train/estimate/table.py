"""The throughput table: measured speed per (model, algorithm, training type, device, precision).

One atomic JSON file, `$FELIX_HOME/perf/throughput.json` = `{"rows": {key: row}}`; the key joins the five
fields with `|`. A row: `unit` (`samples` for GLiNER2, `tokens` for LLMs), `units_per_s` (trained units over
the training runtime, evals and checkpoints included), `s_per_step` with its batch shape (`batch_size`,
`gradient_accumulation_steps`, `num_processes`, `mean_length`), `overhead_s` (the job's wall time minus its
training runtime: start-up, data, final eval, export), `peak_rss_mb` (ru_maxrss at completion; CUDA's max
allocated where there is one), `formula_mb` (the memory formula's part at that job), `source` (`job` or
`probe`), `job_id`, `updated_at`. Every completed job replaces its row (`record_job`, called by the runner).
Pure Python: reading a row never imports torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from felix_train.jobs import atomic_write_json, felix_home, read_json, utcnow

TABLE_FILE = "throughput.json"


def table_path(home=None) -> Path:
    return felix_home(home) / "perf" / TABLE_FILE


def row_key(model: str, algorithm: str, training_type: str, device: str, precision: str) -> str:
    return "|".join((model, algorithm, training_type, device, precision))


def read_table(home=None) -> dict[str, dict]:
    data = read_json(table_path(home)) or {}
    return data.get("rows", {}) if isinstance(data, dict) else {}


def write_row(row: dict, home=None) -> None:
    rows = read_table(home)
    rows[row["key"]] = row
    path = table_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"rows": rows})


def find_row(model: str, algorithm: str, training_type: str, device: str, precision: str, home=None) -> dict | None:
    """The row of exactly these five, else one that differs in precision only (its `matched` says so)."""
    rows = read_table(home)
    exact = rows.get(row_key(model, algorithm, training_type, device, precision))
    if exact is not None:
        return {**exact, "matched": "exact"}
    near = [r for r in rows.values() if (r.get("model"), r.get("algorithm"), r.get("training_type"), r.get("device"))
            == (model, algorithm, training_type, device)]
    return {**near[0], "matched": f"precision {near[0].get('precision')}"} if near else None


def resolved_precision(spec_precision: str, device: str) -> str:
    """`engine.precision` as the table keys it: explicit values stay; `auto` is bf16 on CUDA, fp32 elsewhere."""
    if spec_precision != "auto":
        return spec_precision
    return "bf16" if device.startswith("cuda") else "fp32"


def device_name(device: str) -> str:
    """The table's device: `perf.hardware.device_key` (CPU model and usable CPUs, or the GPU's name)."""
    from felix_train.perf.hardware import describe_device, device_key

    return device_key(describe_device(device, load_torch=device.startswith("cuda")))


def peak_memory_mb(device: str) -> float:
    """This process's peak: CUDA max allocated when on a GPU (torch loaded), else ru_maxrss."""
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def row_from_metrics(spec, metrics: dict[str, Any], *, device: str, wall_s: float | None, job_id: str,
                     source: str = "job") -> dict | None:
    """A table row from a completed job's final metrics; None when they hold no runtime."""
    entry = spec.entry()
    runtime = float(metrics.get("train_runtime_s") or 0.0)
    steps = int(metrics.get("global_step") or metrics.get("steps") or 0)
    if runtime <= 0 or steps <= 0:
        return None
    if entry.family.value == "gliner2":
        unit, units = "samples", float(metrics.get("train_samples_per_second") or 0.0) * runtime
    else:
        unit, units = "tokens", float(metrics.get("num_tokens") or 0.0)
    if units <= 0:
        return None
    precision = metrics.get("precision") or resolved_precision(spec.engine.precision, device)
    dev = device_name(device)
    eng = spec.engine
    return {
        "key": row_key(entry.id, spec.training_algorithm.value, spec.training_type.value, dev, precision),
        "model": entry.id, "algorithm": spec.training_algorithm.value, "training_type": spec.training_type.value,
        "device": dev, "precision": precision, "unit": unit, "units_per_s": round(units / runtime, 4),
        "s_per_step": round(runtime / steps, 4), "steps": steps, "train_runtime_s": round(runtime, 3),
        "batch_size": eng.batch_size, "gradient_accumulation_steps": eng.gradient_accumulation_steps,
        "num_processes": eng.distributed.num_processes, "max_length": eng.max_length,
        "overhead_s": round(max(0.0, (wall_s or runtime) - runtime), 3),
        "peak_rss_mb": round(peak_memory_mb(device), 1), "source": source, "job_id": job_id,
        "updated_at": utcnow(), "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def record_job(spec, metrics: dict[str, Any], *, device: str, wall_s: float | None, job_id: str, home=None,
               formula_mb: float | None = None) -> dict | None:
    """Write (replace) the job's row; returns it (None when the metrics hold no runtime)."""
    row = row_from_metrics(spec, metrics, device=device, wall_s=wall_s, job_id=job_id)
    if row is None:
        return None
    if formula_mb is not None:
        row["formula_mb"] = round(formula_mb, 1)
    write_row(row, home)
    return row
