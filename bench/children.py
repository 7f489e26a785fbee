"""Running one measured child process and reading its figures: the part of `make bench` every benchmark shares.

A child is started with `run_child` (its own `os.wait4` rusage: exit code, wall and CPU seconds, peak RSS, the load
average around it), usually wrapped by `probed` in `bench/probe.py`, whose step log `training_figures` turns into
the first-step time and the steady-state throughput. `run_sides` alternates felix and a baseline script; `summarise`
and `ratios` reduce the runs to medians and felix/baseline ratios. This process never loads torch (`materialise`
builds models in a child): a child's peak RSS starts at its parent's resident size when it was forked.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "bench" / "probe.py"
CHILD_TIMEOUT_S = 900


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


# -- running one child ------------------------------------------------------------------------------------------

def run_child(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None = None) -> dict:
    """Run `cmd`; its exit code, wall and CPU seconds and peak RSS (its own `os.wait4` rusage). Killed after
    `timeout_s` (default `CHILD_TIMEOUT_S`, which `--child-timeout` sets)."""
    timeout_s = timeout_s or CHILD_TIMEOUT_S
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


def probed(cmd: list[str], out: Path, pad_id: int | None = None, time_generate: bool = False) -> list[str]:
    extra = ["--count-tokens", str(pad_id)] if pad_id is not None else []
    extra += ["--time-generate"] if time_generate else []
    return [sys.executable, str(PROBE), "--out", str(out), *extra, "--", *cmd]


def training_figures(probe_file: Path, run: dict, *, per_step: int | None = None, warmup: int = 1) -> dict:
    """First step, steady-state throughput (steps warmup+1..N) and its CPU cost, from the probe's step log.

    Tokens come from the probe's counter; with `per_step`, samples are `per_step` per step instead. The first
    `warmup` steps (at least 1: the first step has no start time) are left out of the rates. With the probe's
    per-row counts, `seq_len` = Σn²/Σn of the timed tokens (the mean length a token attends over); with
    `--time-generate`, the timed steps' `generate()` seconds and generated tokens.
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
    first = min(max(1, warmup), len(steps)) - 1
    start, timed = steps[first], len(steps) - 1 - first
    if timed >= 1:
        last = steps[-1]
        wall = last[0] - start[0]
        cpu = last[1] - start[1]
        amount = (last[2] - start[2]) if per_step is None else per_step * timed
        unit = "tokens" if per_step is None else "samples"
        out.update({unit: amount, "timed_steps": timed, "train_s": round(wall, 3), "train_cpu_s": round(cpu, 3),
                    "step_s": round(wall / timed, 3),
                    f"{unit}_per_s": round(amount / wall, 1) if wall > 0 else None,
                    f"{unit}_per_cpu_s": round(amount / cpu, 1) if cpu > 0 else None})
        if per_step is None and len(last) >= 4 and amount > 0:
            out["seq_len"] = round((last[3] - start[3]) / amount, 1)
        if len(last) >= 6 and last[4] > 0:
            gen_s, gen_tokens = last[4] - start[4], last[5] - start[5]
            out.update({"generate_s_per_step": round(gen_s / timed, 3), "generated_tokens": gen_tokens,
                        "generated_tokens_per_s": round(gen_tokens / gen_s, 1) if gen_s > 0 else None})
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
    pad_id = template = None
    if get_entry(model_id).family.value == "causal_lm":
        from transformers import AutoTokenizer
        from felix_train.trainers.sft_template import training_chat_template
        tokenizer = AutoTokenizer.from_pretrained(path)
        pad_id = tokenizer.pad_token_id
        template = training_chat_template(tokenizer, model_id)
        template = None if template == tokenizer.chat_template else template
    out[model_id] = {"path": path, "pad_id": pad_id, "training_chat_template": template}
print("MATERIALISED " + json.dumps(out))
"""

_PEAKS = """
import json
from felix_train.perf.peak import device_peaks
print("PEAKS " + json.dumps(device_peaks(("fp32", "bf16"), "cpu")))
"""


def materialise(env: dict, model_ids: list[str]) -> dict[str, dict]:
    """Build/resolve each model once, outside any timing, in a child process: this process never loads torch,
    because a child's peak RSS (`ru_maxrss`) starts at its parent's resident size when it was forked.
    Returns {id: {"path", "pad_id", "training_chat_template"}} or {id: {"error"}}; the template is the one with
    `{% generation %}` markers felix trains with, when it differs from the model's own (None otherwise)."""
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


def device_peaks(env: dict) -> dict[str, float | None]:
    """The CPU's matmul peak FLOP/s (fp32, bf16) from `felix_train.perf.peak`, measured in a child with the
    children's environment (so their thread count) and cached under its `$FELIX_HOME`; {} if that failed."""
    done = subprocess.run([sys.executable, "-c", _PEAKS], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("PEAKS ")), None)
    if line is None:
        say(f"measuring the device peak failed (MFU will be n/a): {done.stderr[-500:]}")
        return {}
    return json.loads(line.split(" ", 1)[1])


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as felix's SFT trainer counts them (cgroup quota aside)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def alternating(repeats: int, sides: tuple[str, ...] = ("felix", "baseline")):
    """(repeat, side) pairs: the sides in order on even repeats, reversed on odd ones (A B, B A, A B, ...)."""
    for rep in range(repeats):
        for side in (sides if rep % 2 == 0 else sides[::-1]):
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


# -- felix against a baseline ------------------------------------------------------------------------------------

def run_sides(name: str, spec: Path, baseline_args: list[str], work: Path, env: dict, felix_env: dict, repeats: int,
              *, rate: tuple[str, str], pad_id: int | None = None, per_step: int | None = None,
              warmup: int = 1, variants: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """felix (`python -m felix_train SPEC`) and the baseline script, alternating, each run probed in its own process.

    `variants` adds baseline variants as sides of their own (`{side: extra baseline arguments}`, e.g.
    `{"baseline_bf16": ["--bf16"]}`), run in the same rotation."""
    variants = variants or {}
    sides = ("felix", "baseline", *variants)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for rep, side in alternating(repeats, sides):
        tag = f"{name}-{side}-{rep}"
        out = work / f"{tag}.probe.json"
        job_id = f"bench-{tag}-{os.getpid()}"
        if side == "felix":
            cmd = ["-m", "felix_train", str(spec), "--job-id", job_id]
        else:
            cmd = [*baseline_args, *variants.get(side, []), "--output-dir", str(work / tag)]
        run = run_child(probed(cmd, out, pad_id), {**env, **felix_env} if side == "felix" else env,
                        work / f"{tag}.log")
        run.update(training_figures(out, run, per_step=per_step, warmup=warmup), side=side, repeat=rep)
        if side == "felix":
            run["job_id"] = job_id
        runs[side].append(run)
        say(f"{name} {side} #{rep}: exit {run['exit_code']}, {run.get(rate[0])} {rate[1]}, first step "
            f"{run.get('first_step_s')} s, {run['wall_s']} s wall, load {run['load_before']}->{run['load_after']}")
    return runs
