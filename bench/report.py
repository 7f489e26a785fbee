"""What `make bench` prints and records besides the figures: the felix/baseline table and the machine it ran on."""

from __future__ import annotations

import os
import platform
import socket

from bench.children import usable_cpus


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def table(results: dict) -> str:
    rows = [("benchmark", "metric", "felix", "baseline", "felix/base")]
    sft = results.get("sft")
    if sft and "felix" in sft:
        title = f"SFT tiny-llm dolly×{sft['records']}"
        for key, label in (("tokens_per_s", "real tok/s"), ("tokens_per_cpu_s", "real tok/CPU-s"),
                           ("first_step_s", "first step s (median)"), ("first_step_cold_s", "first step s (cold)"),
                           ("first_step_warm_s", "first step s (warm)"),
                           ("first_step_cpu_s", "CPU s to first step"), ("peak_rss_mb", "peak RSS MB"),
                           ("cpu_s", "CPU s (process)")):
            rows.append((title, label, _fmt(sft["felix"].get(key)), _fmt(sft["baseline"].get(key)),
                         _fmt(sft["ratio"].get(key))))
            title = ""
    elif sft:
        rows.append(("SFT", "skipped", sft.get("skipped", ""), "", ""))
    for model_id, res in (results.get("gliner2") or {}).items():
        title = f"GLiNER2 {model_id.split('/')[-1]} ×{res.get('steps', '')} steps"
        if "felix" not in res:
            rows.append((title, "skipped", res.get("skipped", ""), "", ""))
            continue
        for key, label in (("samples_per_s", "samples/s"), ("samples_per_cpu_s", "samples/CPU-s (main proc)"),
                           ("first_step_s", "first step s"), ("first_step_cpu_s", "CPU s to first step"),
                           ("peak_rss_mb", "peak RSS MB")):
            rows.append((title, label, _fmt(res["felix"].get(key)), _fmt(res["baseline"].get(key)),
                         _fmt(res["ratio"].get(key))))
            title = ""
    val = results.get("validate")
    if val:
        rows.append(("felix-train validate", "wall s (median)", _fmt(val["wall_s"]), "", ""))
        rows.append(("", "torch loaded", str(val["torch_loaded"]), "", ""))
    pred = results.get("predict")
    if pred:
        rep = pred.get("report", {})
        single = (rep.get("gliner2") or {}).get("single") or {}
        llm = rep.get("llm") or {}
        rows.append(("predict (bench/predict.py)", "gliner2 single p50 ms", _fmt(single.get("p50_ms")), "", ""))
        if isinstance(llm, dict):
            rows.append(("", "llm tokens/s", _fmt(llm.get("tokens_per_s")), "", ""))
        if "error" in rep:
            rows.append(("", "error", rep["error"][:60], "", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for dist in ("torch", "transformers", "trl", "peft", "datasets", "gliner2"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "usable_cpus": usable_cpus(), "versions": versions,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}}
