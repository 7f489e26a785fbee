"""`make chaos` (`python -m bench.chaos`): the fault run, then the store at scale; a table each, and a JSON file.

Usage:
    python -m bench.chaos [--jobs 20] [--faults 30] [--seed 0] [--steps 60] [--only chaos|scale]
        [--scale-rows 1000,100000] [--postgres-url URL] [--timeout 1200] [--keep] [--out FILE]

Results go to `bench/results/chaos-<date>-<host>.json` (gitignored). Every process started is ended
before this exits, whatever happened (a deadline per part, SIGALRM behind them, `finally` clean-ups).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.chaos import audit as audit_mod  # noqa: E402
from bench.chaos import report, scale  # noqa: E402
from bench.chaos.faults import ChaosConfig, FaultRun, _say  # noqa: E402
from bench.chaos.schedule import make_schedule  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["chaos", "scale"], default=None, help="run one part (default: both)")
    p.add_argument("--jobs", type=int, default=20, help="jobs under fault (default 20; plus 2 references per kind)")
    p.add_argument("--faults", type=int, default=30, help="faults injected (default 30)")
    p.add_argument("--seed", type=int, default=0, help="the schedule's seed (default 0)")
    p.add_argument("--steps", type=int, default=40, help="max_steps of every job (default 40)")
    p.add_argument("--save-steps", type=int, default=5, help="checkpoint every N steps (default 5)")
    p.add_argument("--refs", type=int, default=2, help="uninterrupted reference jobs per kind (default 2)")
    p.add_argument("--max-attempts", type=int, default=5, help="the workers' --max-attempts (default 5)")
    p.add_argument("--heartbeat-timeout", type=float, default=10.0, help="the workers' --heartbeat-timeout (10)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds for the fault run (default 1200)")
    p.add_argument("--scale-rows", default="1000,100000", help="row counts to measure at (default 1000,100000)")
    p.add_argument("--users", type=int, default=1000, help="users owning the rows (default 1000)")
    p.add_argument("--requests", type=int, default=100, help="GETs per list case (default 100)")
    p.add_argument("--posts", type=int, default=50, help="POSTs per stage (default 50)")
    p.add_argument("--postgres-url", default=os.environ.get("FELIX_TEST_POSTGRES_URL"),
                   help="also measure PostgreSQL (default $FELIX_TEST_POSTGRES_URL), in a schema dropped afterwards")
    p.add_argument("--scale-timeout", type=float, default=900.0, help="seconds for the scale part (default 900)")
    p.add_argument("--keep", action="store_true", help="keep the temp $FELIX_HOME (its path is printed)")
    p.add_argument("--out", default=None, help="results file (default bench/results/chaos-<date>-<host>.json)")
    return p


def _interrupt(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt(f"signal {signum}")


def run_chaos(args, home: Path) -> dict:
    cfg = ChaosConfig(jobs=args.jobs, faults=args.faults, seed=args.seed, steps=args.steps,
                      save_steps=args.save_steps, refs=args.refs, max_attempts=args.max_attempts,
                      heartbeat_timeout_s=args.heartbeat_timeout)
    plans = make_schedule(seed=cfg.seed, jobs=cfg.jobs, faults=cfg.faults, max_steps=cfg.steps,
                          max_attempts=cfg.max_attempts)
    t0 = time.monotonic()
    fr = FaultRun(cfg, home, plans)
    try:
        run = fr.run(time.monotonic() + args.timeout)
        result = audit_mod.audit(home, fr.store, plans, fr.refs, steps=cfg.steps, max_attempts=cfg.max_attempts)
    finally:
        fr.store.close()
    result.update(run=run, config=vars(cfg), wall_s=round(time.monotonic() - t0, 1),
                  schedule=[{"job": p.index, "kind": p.kind.value, "job_id": p.job_id,
                             "faults": [{"kind": f.kind.value, "step": f.step, "outcome": f.outcome,
                                         "fired_at_s": f.fired_at, **f.detail} for f in p.faults]} for p in plans])
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _interrupt)
    budget = (0 if args.only == "scale" else args.timeout) + (0 if args.only == "chaos" else args.scale_timeout)
    signal.alarm(int(budget + 180))  # the backstop behind every part's own deadline
    home = Path(tempfile.mkdtemp(prefix="felix-chaos-"))
    os.environ["FELIX_HOME"] = str(home)  # this process' own look-ups (validation) stay in the temp home
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "host": socket.gethostname(), "cpus": os.cpu_count(), "load_before": os.getloadavg(),
                     "argv": sys.argv[1:] if argv is None else argv}
    _say(f"home {home}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    code = 0
    try:
        if args.only in (None, "chaos"):
            results["chaos"] = run_chaos(args, home / "chaos")
            print(report.chaos_table(results["chaos"]))
            dup = report.dup_run_table(results["chaos"]["run"].get("dup_runs", []))
            if dup:
                print(dup)
        if args.only in (None, "scale"):
            stages = [int(x) for x in args.scale_rows.split(",") if x.strip()]
            results["scale"] = scale.run(home=home / "scale", postgres_url=args.postgres_url, stages=stages,
                                         users=args.users, requests=args.requests, posts=args.posts, seed=args.seed,
                                         deadline=time.monotonic() + args.scale_timeout, say=_say)
            print(report.scale_table(results["scale"]))
            print(report.scale_summary(results["scale"]))
    except KeyboardInterrupt as err:
        results["interrupted"] = str(err) or "interrupted"
        _say(f"interrupted ({results['interrupted']}); every started process was ended")
        code = 130
    finally:
        signal.alarm(0)
        results["load_after"] = os.getloadavg()
        out = Path(args.out) if args.out else (
            ROOT / "bench" / "results" / f"chaos-{datetime.now():%Y%m%d-%H%M%S}-{socket.gethostname()}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        _say(f"results in {out}")
        if args.keep:
            _say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
