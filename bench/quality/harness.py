"""What every part of `make quality` shares: the run context, and felix's CLI run as a user runs it, one process each.

- `Context`: the `$FELIX_HOME`, the work folder, the children's environment, the options.
- `register`: `felix-train datasets add NAME FILE --overwrite`.
- `run_job`: `python -m felix_train SPEC` (its own process: wall and CPU seconds, exit code, the job's status).
- `run_script`: a baseline script in its own process.
- `felix_eval`: `felix-train eval SOURCE DATA --json` in its own process, the report it prints.
- `eval_call`: the same `felix_train.evaluate.evaluate` with options the CLI does not expose (`max_new_tokens`),
  for before/after figures generated alike.

Every child gets `OMP_WAIT_POLICY=PASSIVE` (spinning OpenMP threads slow everyone on a shared machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.children import ROOT, child_env, run_child, say, write_yaml

CLI = [sys.executable, "-m", "felix_train"]
EVAL_TIMEOUT_S = 3600


@dataclass
class Context:
    home: Path
    work: Path
    env: dict[str, str]
    quick: bool = False
    seeds: list[int] = field(default_factory=lambda: [42])
    data_dir: Path = ROOT.parent / "shared" / "data"

    @classmethod
    def create(cls, home: Path, threads: int | None, **kwargs) -> "Context":
        env = {**child_env(home, threads), "OMP_WAIT_POLICY": "PASSIVE"}
        work = home / "quality-work"
        work.mkdir(parents=True, exist_ok=True)
        return cls(home=home, work=work, env=env, **kwargs)

    def folder(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def merge_spec(spec: dict, extra: dict) -> dict:
    """`spec` with `extra` merged in, nested mappings key by key (a copy; neither argument changes)."""
    out = dict(spec)
    for key, value in extra.items():
        out[key] = merge_spec(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def register(ctx: Context, name: str, path: Path) -> None:
    """`felix-train datasets add NAME FILE --overwrite`; SystemExit with its output when the file is refused."""
    done = subprocess.run([*CLI, "datasets", "add", name, str(path), "--overwrite"], env=ctx.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"felix-train datasets add {name} {path} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    say(done.stdout.strip())


def run_job(ctx: Context, job_id: str, spec: dict, timeout_s: float = 4 * 3600) -> dict:
    """Run SPEC as job `job_id` in its own process; exit code, wall/CPU seconds, status and metrics of the job."""
    spec_path = write_yaml(ctx.folder("specs") / f"{job_id}.yaml", spec)
    say(f"job {job_id}: {json.dumps(spec)}")
    run = run_child([*CLI, str(spec_path), "--job-id", job_id], ctx.env, ctx.folder("logs") / f"{job_id}.log",
                    timeout_s)
    status = _read_json(ctx.home / "jobs" / job_id / "status.json")
    run.update(job=job_id, spec=spec, status=status.get("status"), error=status.get("error"),
               metrics=status.get("metrics") or {}, data=status.get("data"))
    say(f"job {job_id}: {run['status']} (exit {run['exit_code']}) in {run['wall_s']:.0f} s")
    return run


def job_error(run: dict) -> str:
    """One line on why a job did not complete: its status, the first line of its error, its log."""
    error = run.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    first = str(message or "no error recorded").strip().splitlines()[0][:240]
    return f"job {run.get('status')} (exit {run.get('exit_code')}): {first}; see {run.get('log')}"


def run_script(ctx: Context, tag: str, args: list[str], timeout_s: float = 4 * 3600) -> dict:
    """A baseline script (`python SCRIPT ARGS`) in its own process."""
    say(f"{tag}: {' '.join(Path(a).name if '/' in a else a for a in args)}")
    run = run_child([sys.executable, *args], ctx.env, ctx.folder("logs") / f"{tag}.log", timeout_s)
    say(f"{tag}: exit {run['exit_code']} in {run['wall_s']:.0f} s")
    return run


def felix_eval(ctx: Context, tag: str, source: str, data: Path, *, threshold: float | None = None) -> dict:
    """`felix-train eval SOURCE DATA --json [--threshold T]` in its own process: its report, plus `wall_s`."""
    args = [*CLI, "eval", source, str(data), "--json"] + (["--threshold", str(threshold)] if threshold is not None else [])
    return _json_child(ctx, tag, args)


_EVAL_CALL = """
import json, sys
from felix_train.evaluate import evaluate
options = json.loads(sys.argv[3])
print(json.dumps(evaluate(sys.argv[1], sys.argv[2], **options), default=str))
"""


def eval_call(ctx: Context, tag: str, source: str, data: Path, **options) -> dict:
    """`felix_train.evaluate.evaluate(SOURCE, DATA, **options)` (what `felix-train eval` calls) in its own process."""
    return _json_child(ctx, tag, [sys.executable, "-c", _EVAL_CALL, source, str(data), json.dumps(options)])


def _json_child(ctx: Context, tag: str, args: list[str]) -> dict:
    log = ctx.folder("logs") / f"{tag}.log"
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as err:
        done = subprocess.run(args, env=ctx.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                              timeout=EVAL_TIMEOUT_S)
    wall = round(time.time() - t0, 1)
    line = next((x for x in reversed(done.stdout.splitlines()) if x.startswith("{")), None)
    try:
        report = json.loads(line) if line else {"error": f"no JSON on stdout (exit {done.returncode}); see {log}"}
    except json.JSONDecodeError as e:
        report = {"error": f"unreadable JSON ({e}); see {log}"}
    report["wall_s"] = wall
    say(f"eval {tag}: {summary(report)} in {wall:.0f} s")
    return report


def summary(report: dict) -> str:
    if "error" in report:
        return f"error: {report['error']}"
    if report.get("eval") == "ner":
        m = report["micro"]
        return f"F1 {m['f1']:.3f} (P {m['precision']:.3f} R {m['recall']:.3f}) at {report.get('threshold')}"
    keys = ("perplexity", "reward_accuracy", "reward_margin", "logp_accuracy", "numeric_accuracy")
    return ", ".join(f"{k} {report[k]:.3f}" for k in keys if isinstance(report.get(k), (int, float)))


def ner_figures(report: dict) -> dict:
    """micro P/R/F1 and per-label F1 of a NER report (or its error)."""
    if "error" in report or "micro" not in report:
        return {"error": report.get("error", "no figures")}
    m = report["micro"]
    return {"f1": round(m["f1"], 4), "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
            "per_label": {k: round(v["f1"], 4) for k, v in (report.get("per_label") or {}).items()},
            "threshold": report.get("threshold"), "threshold_source": report.get("threshold_source")}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def skip_reason(ctx: Context, *files: str) -> str | None:
    """A message when the shared data (or one of `files` under it) is absent, else None."""
    if not ctx.data_dir.is_dir():
        return f"{ctx.data_dir} is absent (the shared sample datasets); nothing to measure"
    missing = [f for f in files if not (ctx.data_dir / f).exists()]
    return f"missing under {ctx.data_dir}: {', '.join(missing)}" if missing else None
