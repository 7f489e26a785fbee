#!/usr/bin/env python
"""`make bench`: felix against the baseline a user would write by hand, on this machine, in one run.

Usage:
    python scripts/bench.py [--quick] [--repeats N] [--only sft,gliner2,validate,predict] [--threads N]
        [--sft-records N] [--home DIR] [--out FILE]

Every measured run is its own process (`benchmarks/probe.py` around `python -m felix_train SPEC` or a
baseline script), felix and baseline alternate (A B, B A, A B, ...), and the medians and their ratios
are reported. Nothing is warm from the parent: each child imports its libraries and loads its model.

- **SFT LoRA** on `felix/tiny-llm` and real chat data (`../shared/data/dolly/dolly_open_qa_1000.jsonl`,
  the first `--sft-records`; skipped with a reason if absent): felix (`engine.packing` default) against
  `benchmarks/baselines/trl_sft.py` (a plain TRL `SFTTrainer`, TRL defaults) with the same model, data,
  one epoch, batch 8, max_length 512 (longer records truncated on both sides), LoRA r 16 / alpha 32 /
  dropout 0.05 / all-linear, lr 2e-4, warmup 0.1, weight decay 0.01, seed 42, loss on the replies.
  Figures: real (non-padding) tokens per second over steps 2..N (the probe counts the ids entering the
  token embedding in training forwards), the same per CPU-second of the process, seconds from process
  launch to the end of the first optimizer step (`first_step_s`; the first repeat runs with empty
  tokenization caches on both sides: `first_step_cold_s`), peak RSS and CPU time (`os.wait4` of the child;
  Linux counts a child's peak RSS from its parent's size at fork, so this process never loads torch and
  records that floor as `rss_floor_mb`).
- **GLiNER2** on `felix/tiny-gliner2` and `felix/gliner2-minilm-l6` (LoRA, the embedded
  `felix-ner-quickstart` data, batch 8, one epoch (`--quick`: 20 or 30 steps)): felix against
  `benchmarks/baselines/gliner2_direct.py` (`ExtractorTrainer` called directly, gliner2 defaults).
  Figures: samples per second over steps 2..N (and per CPU-second of the main process: gliner2's
  DataLoader workers run in processes of their own), first step, peak RSS.
- **validate**: `felix-train validate SPEC` wall time (median of 5) and whether it loaded torch.
- **predict**: `scripts/bench_predict.py` (API → deployed model latency), its JSON included.

Results go to `bench/results/<date>-<host>.json` (gitignored) and a table is printed. The 1-minute load
average is recorded before and after every run: on a shared machine compare ratios, not absolute figures.
`--threads N` sets OMP_NUM_THREADS for every child (both sides alike); by default children get the
environment as is, which is what a user gets, except on a busy machine (1-minute load above the CPU
count at start): there OpenMP's spinning threads slow both sides down many-fold (10-20x measured), the
figures would measure the contention, and every child gets OMP_NUM_THREADS=1 (`--threads 0` overrides).
`--felix-env KEY=VALUE` adds to the felix runs' environment only: a what-if for an engine default (say so
when quoting such figures).
`--quick` runs fewer records, steps and repeats (~5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = ROOT / "benchmarks" / "probe.py"
TRL_BASELINE = ROOT / "benchmarks" / "baselines" / "trl_sft.py"
GLINER_BASELINE = ROOT / "benchmarks" / "baselines" / "gliner2_direct.py"
DOLLY = ROOT.parent / "shared" / "data" / "dolly" / "dolly_open_qa_1000.jsonl"
NER_DATASET = "felix-ner-quickstart"
TINY_LLM = "felix/tiny-llm"
GLINER_MODELS = ("felix/tiny-gliner2", "felix/gliner2-minilm-l6")

SFT = {"lr": 2e-4, "batch_size": 8, "max_length": 512, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
       "warmup": 0.1, "weight_decay": 0.01, "seed": 42}
GLINER = {"lr": 2e-3, "batch_size": 8, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "warmup": 0.1,
          "weight_decay": 0.01, "seed": 42}
CHILD_TIMEOUT_S = 900


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


# -- running one child ------------------------------------------------------------------------------------------

def run_child(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float = CHILD_TIMEOUT_S) -> dict:
    """Run `cmd`; its exit code, wall and CPU seconds and peak RSS (its own `os.wait4` rusage)."""
    load_before = load1()
    t0 = time.time()
    env = {**env, "FELIX_BENCH_T0": repr(t0)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return {"exit_code": proc.returncode, "wall_s": round(time.time() - t0, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "load_before": load_before, "load_after": load1(), "t0": t0, "log": str(log_path)}


def probed(cmd: list[str], out: Path, pad_id: int | None = None) -> list[str]:
    extra = ["--count-tokens", str(pad_id)] if pad_id is not None else []
    return [sys.executable, str(PROBE), "--out", str(out), *extra, "--", *cmd]


def training_figures(probe_file: Path, run: dict, *, per_step: int | None = None) -> dict:
    """First step, steady-state throughput (steps 2..N) and its CPU cost, from the probe's step log.

    Tokens come from the probe's counter; with `per_step`, samples are `per_step` per step instead.
    """
    if not probe_file.exists():
        return {"error": f"no probe output (exit {run['exit_code']}); see {run['log']}"}
    probe = json.loads(probe_file.read_text())
    steps = probe["steps"]
    out: dict = {"steps": len(steps), "threads": probe.get("threads")}
    if not steps:
        out["error"] = f"no optimizer step (exit {run['exit_code']}); see {run['log']}"
        return out
    out["first_step_s"] = round(steps[0][0] - run["t0"], 3)
    out["first_step_cpu_s"] = round(steps[0][1], 3)  # CPU seconds of the process up to then: steadier under load
    if len(steps) >= 2:
        wall = steps[-1][0] - steps[0][0]
        cpu = steps[-1][1] - steps[0][1]
        amount = (steps[-1][2] - steps[0][2]) if per_step is None else per_step * (len(steps) - 1)
        unit = "tokens" if per_step is None else "samples"
        out.update({unit: amount, "train_s": round(wall, 3), "train_cpu_s": round(cpu, 3),
                    f"{unit}_per_s": round(amount / wall, 1) if wall > 0 else None,
                    f"{unit}_per_cpu_s": round(amount / cpu, 1) if cpu > 0 else None})
    if per_step is None:
        out["tokens_total"] = steps[-1][2]
    return out


# -- setup --------------------------------------------------------------------------------------------------------

def child_env(home: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "FELIX_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(home / "hf-datasets-cache"), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
           "TQDM_MININTERVAL": "5"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


_MATERIALISE = """
import json, sys
from felix_train.catalog import get_entry
from felix_train.errors import ModelNotAvailable
from felix_train.models import resolve_model
out = {}
for model_id in sys.argv[1:]:
    try:
        path = str(resolve_model(get_entry(model_id)))
    except ModelNotAvailable as err:
        out[model_id] = {"error": str(err)}
        continue
    pad_id = None
    if get_entry(model_id).family.value == "causal_lm":
        from transformers import AutoTokenizer
        pad_id = AutoTokenizer.from_pretrained(path).pad_token_id
    out[model_id] = {"path": path, "pad_id": pad_id}
print("MATERIALISED " + json.dumps(out))
"""


def materialise(env: dict, model_ids: list[str]) -> dict[str, dict]:
    """Build/resolve each model once, outside any timing, in a child process: this process never loads torch,
    because a child's peak RSS (`ru_maxrss`) starts at its parent's resident size when it was forked.
    Returns {id: {"path", "pad_id"}} or {id: {"error"}}."""
    if not model_ids:
        return {}
    done = subprocess.run([sys.executable, "-c", _MATERIALISE, *model_ids], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    line = next((x for x in done.stdout.splitlines() if x.startswith("MATERIALISED ")), None)
    if line is None:
        raise SystemExit(f"materialising {model_ids} failed:\n{done.stderr[-3000:]}")
    models = json.loads(line.split(" ", 1)[1])
    for model_id, info in models.items():
        if "error" in info:
            say(f"skipping {model_id}: {info['error']}")
    return models


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as felix's SFT trainer counts them (cgroup quota aside)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def alternating(repeats: int):
    """(repeat, side) pairs: felix first on even repeats, the baseline first on odd ones."""
    for rep in range(repeats):
        sides = ("felix", "baseline") if rep % 2 == 0 else ("baseline", "felix")
        for side in sides:
            yield rep, side


def summarise(runs: list[dict], keys: list[str]) -> dict:
    ok = [r for r in runs if r.get("exit_code") == 0 and "error" not in r]
    out = {k: median([r.get(k) for r in ok]) for k in keys}
    out["runs_ok"] = len(ok)
    out["runs"] = len(runs)
    return out


def ratios(felix: dict, base: dict, higher_better: list[str], lower_better: list[str]) -> dict:
    out = {}
    for key in higher_better + lower_better:
        a, b = felix.get(key), base.get(key)
        if a and b:
            out[key] = round(a / b, 3)
    return out


# -- SFT ----------------------------------------------------------------------------------------------------------

def run_sides(name: str, spec: Path, baseline_args: list[str], work: Path, env: dict, felix_env: dict, repeats: int,
              *, rate: tuple[str, str], pad_id: int | None = None, per_step: int | None = None) -> dict[str, list[dict]]:
    """felix (`python -m felix_train SPEC`) and the baseline script, alternating, each run probed in its own process."""
    runs: dict[str, list[dict]] = {"felix": [], "baseline": []}
    for rep, side in alternating(repeats):
        tag = f"{name}-{side}-{rep}"
        out = work / f"{tag}.probe.json"
        if side == "felix":
            cmd = ["-m", "felix_train", str(spec), "--job-id", f"bench-{tag}-{os.getpid()}"]
        else:
            cmd = [*baseline_args, "--output-dir", str(work / tag)]
        run = run_child(probed(cmd, out, pad_id), {**env, **felix_env} if side == "felix" else env,
                        work / f"{tag}.log")
        run.update(training_figures(out, run, per_step=per_step), side=side, repeat=rep)
        runs[side].append(run)
        say(f"{name} {side} #{rep}: exit {run['exit_code']}, {run.get(rate[0])} {rate[1]}, first step "
            f"{run.get('first_step_s')} s, {run['wall_s']} s wall, load {run['load_before']}->{run['load_after']}")
    return runs


def bench_sft(home: Path, work: Path, env: dict, args, model_path: str, pad_id: int, felix_env: dict) -> dict:
    if not DOLLY.exists():
        return {"skipped": f"the chat data {DOLLY} is not there (it lives beside the repo as ../shared/data)"}
    from felix_train.data.registry import DatasetRegistry

    lines = [line for line in DOLLY.read_text(encoding="utf-8").splitlines() if line.strip()][: args.sft_records]
    data = work / f"dolly-{len(lines)}.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    name = f"bench-dolly-{len(lines)}"
    manifest = DatasetRegistry(home).add(name, data, overwrite=True)
    if str(getattr(manifest.state, "value", manifest.state)) != "ready":
        return {"skipped": f"the chat data did not validate: {manifest.error}"}

    spec = write_yaml(work / "sft.yaml", {
        "base_model": TINY_LLM, "datasets": [{"name": name}], "num_epochs": 1, "learning_rate": SFT["lr"],
        "engine": {"seed": SFT["seed"], "batch_size": SFT["batch_size"], "max_length": SFT["max_length"],
                   "length_policy": "truncate", "eval": {"fraction": 0}, "warmup_ratio": SFT["warmup"],
                   "weight_decay": SFT["weight_decay"],
                   "lora": {"r": SFT["lora_r"], "alpha": SFT["lora_alpha"], "dropout": SFT["lora_dropout"],
                            "target_modules": "all-linear"}}})
    baseline_args = [str(TRL_BASELINE), "--model", model_path, "--data", str(data), "--lr", str(SFT["lr"]),
                     "--batch-size", str(SFT["batch_size"]), "--max-length", str(SFT["max_length"]),
                     "--lora-r", str(SFT["lora_r"]), "--lora-alpha", str(SFT["lora_alpha"]),
                     "--lora-dropout", str(SFT["lora_dropout"]), "--warmup", str(SFT["warmup"]),
                     "--weight-decay", str(SFT["weight_decay"]), "--seed", str(SFT["seed"])]
    runs = run_sides("sft", spec, baseline_args, work, env, felix_env, args.repeats, pad_id=pad_id,
                     rate=("tokens_per_s", "tok/s"))
    keys = ["tokens_per_s", "tokens_per_cpu_s", "first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s", "wall_s",
            "train_s", "tokens_total"]
    result: dict = {"records": len(lines), "hyperparameters": SFT, "runs": runs}
    for side in runs:
        result[side] = summarise(runs[side], keys)
        warm = [r.get("first_step_s") for r in runs[side][1:] if r.get("exit_code") == 0] if args.repeats > 1 else []
        result[side]["first_step_cold_s"] = runs[side][0].get("first_step_s") if runs[side] else None
        result[side]["first_step_warm_s"] = median(warm)
    result["ratio"] = ratios(result["felix"], result["baseline"], ["tokens_per_s", "tokens_per_cpu_s"],
                             ["first_step_s", "first_step_cpu_s", "first_step_cold_s", "first_step_warm_s",
                              "peak_rss_mb", "cpu_s"])
    return result


# -- GLiNER2 ------------------------------------------------------------------------------------------------------

def bench_gliner(home: Path, work: Path, env: dict, args, model_id: str, model_path: str, steps: int,
                 felix_env: dict) -> dict:
    from felix_train.data.registry import DatasetRegistry

    data = DatasetRegistry(home).data_path(NER_DATASET)
    short = model_id.split("/")[-1]
    spec = write_yaml(work / f"{short}.yaml", {
        "base_model": model_id, "datasets": [{"name": NER_DATASET}], "num_epochs": 1, "learning_rate": GLINER["lr"],
        "engine": {"seed": GLINER["seed"], "batch_size": GLINER["batch_size"], "max_steps": steps,
                   "eval": {"fraction": 0}, "warmup_ratio": GLINER["warmup"], "weight_decay": GLINER["weight_decay"],
                   "lora": {"r": GLINER["lora_r"], "alpha": GLINER["lora_alpha"], "dropout": GLINER["lora_dropout"]}}})
    baseline_args = [str(GLINER_BASELINE), "--model", model_path, "--data", str(data), "--lr", str(GLINER["lr"]),
                     "--batch-size", str(GLINER["batch_size"]), "--max-steps", str(steps),
                     "--lora-r", str(GLINER["lora_r"]), "--lora-alpha", str(GLINER["lora_alpha"]),
                     "--lora-dropout", str(GLINER["lora_dropout"]), "--warmup", str(GLINER["warmup"]),
                     "--weight-decay", str(GLINER["weight_decay"]), "--seed", str(GLINER["seed"])]
    runs = run_sides(short, spec, baseline_args, work, env, felix_env, args.repeats, per_step=GLINER["batch_size"],
                     rate=("samples_per_s", "samples/s"))
    keys = ["samples_per_s", "samples_per_cpu_s", "first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s", "wall_s"]
    result: dict = {"steps": steps, "hyperparameters": GLINER, "runs": runs}
    for side in runs:
        result[side] = summarise(runs[side], keys)
    result["ratio"] = ratios(result["felix"], result["baseline"], ["samples_per_s", "samples_per_cpu_s"],
                             ["first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s"])
    return result


# -- validate and predict -----------------------------------------------------------------------------------------

def bench_validate(home: Path, work: Path, env: dict, n: int = 5) -> dict:
    spec = write_yaml(work / "validate.yaml", {
        "base_model": "felix/tiny-gliner2", "datasets": [{"name": NER_DATASET}], "engine": {"max_steps": 10}})
    runs = [run_child([sys.executable, "-m", "felix_train", "validate", str(spec)], env, work / f"validate-{i}.log")
            for i in range(n)]
    check = subprocess.run(
        [sys.executable, "-c", "import runpy, sys\nsys.argv = ['felix-train', 'validate', sys.argv[1]]\n"
         "try:\n    runpy.run_module('felix_train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH_LOADED', 'torch' in sys.modules, file=sys.stderr)", str(spec)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"runs": n, "exit_codes": sorted({r["exit_code"] for r in runs}),
            "wall_s": median([r["wall_s"] for r in runs]), "cpu_s": median([r["cpu_s"] for r in runs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "torch_loaded": "TORCH_LOADED True" in check.stderr}


def bench_predict(home: Path, work: Path, env: dict, quick: bool) -> dict:
    out = work / "predict.json"
    counts = ["--requests", "30", "--batches", "5", "--llm-requests", "3"] if quick else \
        ["--requests", "60", "--batches", "10", "--llm-requests", "5"]
    run = run_child([sys.executable, str(ROOT / "scripts" / "bench_predict.py"), "--home", str(home / "predict"),
                     "--out", str(out), *counts], env, work / "predict.log", timeout_s=600)
    report = json.loads(out.read_text()) if out.exists() else {"error": f"no report (exit {run['exit_code']})"}
    return {"exit_code": run["exit_code"], "wall_s": run["wall_s"], "report": report}


# -- report -------------------------------------------------------------------------------------------------------

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
        rows.append(("predict (bench_predict.py)", "gliner2 single p50 ms", _fmt(single.get("p50_ms")), "", ""))
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer records, steps and repeats (~5 minutes)")
    p.add_argument("--repeats", type=int, default=None, help="runs per side (default 3, --quick 2)")
    p.add_argument("--only", default="sft,gliner2,validate,predict", help="comma-separated subset")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for every child; 0 leaves the environment as is (default: as is, or 1 "
                        "on both sides when the machine is busy)")
    p.add_argument("--felix-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the felix runs only (a what-if for an engine default), repeatable")
    p.add_argument("--sft-records", type=int, default=None, help="dolly records for SFT (default 400, --quick 200)")
    p.add_argument("--gliner-models", default=",".join(GLINER_MODELS))
    p.add_argument("--home", default=None, help="$FELIX_HOME for the children (default: a fresh temporary one)")
    p.add_argument("--out", default=None, help="results file (default bench/results/<date>-<host>.json)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.sft_records = args.sft_records or (200 if args.quick else 400)
    only = set(args.only.split(","))

    temp = None if args.home else tempfile.mkdtemp(prefix="felix-bench-")
    home = Path(args.home or temp).resolve()
    work = home / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    threads_note = "as the environment says"
    if args.threads is None and "OMP_NUM_THREADS" not in os.environ and load1() > cpus:
        args.threads = 1
        threads_note = f"1 on both sides (auto: load {load1()} on {cpus} CPUs; --threads 0 leaves them as they are)"
        say(f"the machine is busy (load {load1()} on {cpus} CPUs): OpenMP's spinning threads would slow both sides "
            "down many-fold and the figures would measure the contention; every child gets OMP_NUM_THREADS=1 "
            "(--threads 0: leave them as they are)")
    elif args.threads:
        threads_note = f"{args.threads} on both sides (--threads)"
    env = child_env(home, args.threads or None)
    felix_env = dict(item.split("=", 1) for item in args.felix_env)
    os.environ["FELIX_HOME"] = str(home)  # this process materialises models and registers data there too
    started = time.time()
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "options": {"quick": args.quick, "repeats": args.repeats, "threads": threads_note,
                                 "sft_records": args.sft_records, "felix_env": felix_env},
                     "load_start": os.getloadavg()}
    try:
        wanted = ([TINY_LLM] if "sft" in only else []) + \
                 ([m for m in args.gliner_models.split(",") if m] if "gliner2" in only else [])
        say(f"home {home}; materialising {', '.join(wanted) or 'nothing'} (not timed)")
        models = materialise(env, wanted)
        paths = {m: info.get("path") for m, info in models.items()}
        results["rss_floor_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if "sft" in only:
            results["sft"] = (bench_sft(home, work, env, args, paths[TINY_LLM], models[TINY_LLM]["pad_id"], felix_env)
                              if paths.get(TINY_LLM)
                              else {"skipped": f"{TINY_LLM} is not available"})
        if "gliner2" in only:
            results["gliner2"] = {}
            from felix_train.data.registry import DatasetRegistry

            with open(DatasetRegistry(home).data_path(NER_DATASET), encoding="utf-8") as fh:
                epoch_steps = -(-sum(1 for line in fh if line.strip()) // GLINER["batch_size"])
            for model_id in [m for m in args.gliner_models.split(",") if m]:
                if not paths.get(model_id):
                    results["gliner2"][model_id] = {"skipped": f"{model_id} is not available (see the log above)"}
                    continue
                # one whole epoch (quick: a part): both sides then train on exactly the same records, in their
                # own orders; a few steps measured the sentence lengths of two shuffles more than the trainers
                steps = (20 if args.quick else epoch_steps) if "tiny" in model_id else (30 if args.quick else epoch_steps)
                results["gliner2"][model_id] = bench_gliner(home, work, env, args, model_id, paths[model_id], steps,
                                                            felix_env)
        if "validate" in only:
            results["validate"] = bench_validate(home, work, env)
        if "predict" in only:
            results["predict"] = bench_predict(home, work, env, args.quick)
    finally:
        results["load_end"] = os.getloadavg()
        results["total_s"] = round(time.time() - started, 1)
        out = Path(args.out) if args.out else ROOT / "bench" / "results" / \
            f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    print(table(results))
    load_start = tuple(round(x, 2) for x in results["load_start"])
    load_end = tuple(round(x, 2) for x in results["load_end"])
    print(f"\nload average (1/5/15 min): start {load_start}, end {load_end}; {results['total_s']} s in all; "
          f"threads per child: {threads_note}" + (f"; felix runs with {felix_env}" if felix_env else "")
          + f"; peak RSS floor (this process at fork): {results.get('rss_floor_mb')} MB")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
