"""What `make bench` prints and records besides the figures: the felix/baseline table, one line per ratio
(`<name>: <felix> vs <baseline> = <ratio>x`, for scripts), the MFU of both sides, and the machine it ran on."""

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


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


RATIO_LINES = (  # (name, results path, rate key, unit)
    ("sft-tiny", ("sft",), "tokens_per_s", "tok/s"),
    ("sft-smollm2", ("sft-smollm2",), "tokens_per_s", "tok/s"),
    ("dpo-smollm2", ("dpo",), "tokens_per_s", "tok/s"),
    ("gliner2-minilm", ("gliner2", "felix/gliner2-minilm-l6"), "samples_per_s", "samples/s"),
    ("gliner2-tiny", ("gliner2", "felix/tiny-gliner2"), "samples_per_s", "samples/s"),
)
LLM_ROWS = (("tokens_per_s", "real tok/s"), ("tokens_per_cpu_s", "real tok/CPU-s"), ("mfu", "MFU (fp32 peak)"),
            ("achieved_gflops", "achieved GFLOP/s"), ("seq_len", "tokens attended (Σn²/Σn)"),
            ("step_s", "s per timed step"), ("first_step_s", "first step s"), ("peak_rss_mb", "peak RSS MB"),
            ("cpu_s", "CPU s (process)"))


def _section(results: dict, path: tuple[str, ...]) -> dict | None:
    res = results
    for key in path:
        res = res.get(key) if isinstance(res, dict) else None
    return res


def _compared_rows(rows: list, title: str, res: dict, keys) -> None:
    """Rows of a felix-vs-baseline section (MFU as a percentage), or its skip reason."""
    if "felix" not in res or "baseline" not in res:
        rows.append((title, "skipped", str(res.get("skipped", res.get("error", "")))[:60], "", ""))
        return
    for key, label in keys:
        fmt = _pct if key == "mfu" else _fmt
        rows.append((title, label, fmt(res["felix"].get(key)), fmt(res["baseline"].get(key)),
                     _fmt(res["ratio"].get(key))))
        title = ""


def _grpo_rows(rows: list, res: dict) -> None:
    if "felix" not in res:
        rows.append(("GRPO smollm2", "skipped", str(res.get("skipped", ""))[:60], "", ""))
        return
    f, split = res["felix"], res["felix"].get("felix_split") or {}
    title = f"GRPO smollm2 ×{res['timed_steps']} steps (felix)"
    for label, value in (("steps/s", f.get("steps_per_s")), ("s per step", f.get("step_s")),
                         ("generate() s/step (probe)", f.get("generate_s_per_step")),
                         ("generated tok/s (probe)", f.get("generated_tokens_per_s")),
                         ("rest s/step (reward+train)", f.get("rest_s_per_step")),
                         ("MFU (train+gen, fp32 peak)", _pct(f.get("mfu"))),
                         *((f"felix {k}", "n/a" if v is None else v) for k, v in split.items())):
        rows.append((title, label, value if isinstance(value, str) else _fmt(value), "", ""))
        title = ""


def table(results: dict) -> str:
    rows = [("benchmark", "metric", "felix", "baseline", "felix/base")]
    sft = results.get("sft")
    if sft and "felix" in sft:
        title = f"SFT tiny-llm dolly×{sft['records']}"
        for key, label in (("tokens_per_s", "real tok/s"), ("tokens_per_cpu_s", "real tok/CPU-s"),
                           ("mfu", "MFU (fp32 peak)"),
                           ("first_step_s", "first step s (median)"), ("first_step_cold_s", "first step s (cold)"),
                           ("first_step_warm_s", "first step s (warm)"),
                           ("first_step_cpu_s", "CPU s to first step"), ("peak_rss_mb", "peak RSS MB"),
                           ("cpu_s", "CPU s (process)")):
            fmt = _pct if key == "mfu" else _fmt
            rows.append((title, label, fmt(sft["felix"].get(key)), fmt(sft["baseline"].get(key)),
                         _fmt(sft["ratio"].get(key))))
            title = ""
    elif sft:
        rows.append(("SFT", "skipped", sft.get("skipped", ""), "", ""))
    for key, what, count in (("sft-smollm2", "SFT smollm2 dolly", "records"), ("dpo", "DPO smollm2 hh-rlhf", "pairs")):
        res = results.get(key)
        if res is not None:
            title = f"{what}×{res[count]} ({res.get('timed_steps')} timed steps)" if count in res else what
            _compared_rows(rows, title, res, LLM_ROWS)
    if "grpo" in results:
        _grpo_rows(rows, results["grpo"])
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


def ratio_lines(results: dict) -> list[str]:
    """`<name>: <felix> vs <baseline> = <ratio>x` for every felix/baseline rate in `results` (medians)."""
    lines = []
    for name, path, key, unit in RATIO_LINES:
        res = _section(results, path)
        if not isinstance(res, dict) or "felix" not in res or "baseline" not in res:
            continue
        a, b = res["felix"].get(key), res["baseline"].get(key)
        ratio = res.get("ratio", {}).get(key)
        variant = res.get("baseline_variant")
        note = f" [{unit}; baseline {variant}]" if variant and variant != "baseline" else f" [{unit}]"
        lines.append(f"{name}: {_fmt(a)} vs {_fmt(b)} = {'-' if ratio is None else f'{ratio:.2f}'}x{note}")
    return lines


def mfu_lines(results: dict) -> list[str]:
    """The MFU of both sides (and the GRPO split) in words: the peak and the formula they rest on."""
    peaks = results.get("peaks_flops") or {}
    lines = []
    if peaks:
        fp32, bf16 = peaks.get("fp32"), peaks.get("bf16")
        lines.append(f"device matmul peak (felix_train.perf.peak): fp32 {_fmt((fp32 or 0) / 1e9)} GFLOP/s, "
                     f"bf16 {_fmt((bf16 or 0) / 1e9)} GFLOP/s")
    for name, path, _, _ in RATIO_LINES[:3]:
        res = _section(results, path)
        if not isinstance(res, dict) or "felix" not in res or "baseline" not in res:
            continue
        f, b = res["felix"], res["baseline"]
        run = next((r for side in res.get("runs", {}).values() for r in side if r.get("flops_formula")), {})
        lines.append(f"{name} MFU: felix {_pct(f.get('mfu'))} ({_fmt(f.get('achieved_gflops'))} GFLOP/s) vs "
                     f"baseline {_pct(b.get('mfu'))} ({_fmt(b.get('achieved_gflops'))} GFLOP/s); "
                     f"{_fmt((f.get('flops_per_token') or 0) / 1e9)} GFLOP/token at T={_fmt(f.get('seq_len'))}, "
                     f"{run.get('flops_formula', 'no formula')}")
        if res.get("precision"):
            lines.append(f"{name} precision: {res['precision']}")
    grpo = results.get("grpo")
    if isinstance(grpo, dict) and "felix" in grpo:
        f = grpo["felix"]
        split = ", ".join(f"{k} {'n/a' if v is None else v}" for k, v in (f.get("felix_split") or {}).items())
        lines.append(f"grpo-smollm2: {_fmt(f.get('steps_per_s'))} steps/s ({_fmt(f.get('step_s'))} s/step: generate "
                     f"{_fmt(f.get('generate_s_per_step'))} s at {_fmt(f.get('generated_tokens_per_s'))} tok/s, rest "
                     f"{_fmt(f.get('rest_s_per_step'))} s), MFU {_pct(f.get('mfu'))}; felix's own split: {split}")
    return lines


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
