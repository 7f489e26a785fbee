"""Measure the OpenMP wait policy's effect: a tiny MLP training step alone and beside a competing process.

    python -m felix_train.perf.bench_threads [--steps 30] [--policies unset,ACTIVE,PASSIVE]

Each (policy, competitor) case runs in fresh processes (the policy is read once, when torch loads
OpenMP): the measured process times `--steps` training steps of a small MLP after a warm-up, with
`OMP_NUM_THREADS` = the usable CPUs; the competitor, when present, is the same training loop with the
same policy, run endlessly (a second job on the same cores, as a worker running two jobs). Prints the
median and 90th-percentile step time per case and the load average, and a JSON line with all figures.
A measurement script, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from felix_train.perf.hardware import usable_cpus


def _child(steps: int, warmup: int, forever: bool) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 256), torch.randn(64, 256)
    times = []
    i = 0
    while forever or i < warmup + steps:
        t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        i += 1
    print(json.dumps({"threads": torch.get_num_threads(), "step_ms": [round(t * 1e3, 3) for t in times]}))


def _env(policy: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_case(policy: str, competitor: bool, steps: int, threads: int) -> dict:
    """One measurement: median / p90 step time (ms) for `policy`, with or without a competing job."""
    me = [sys.executable, "-m", "felix_train.perf.bench_threads", "--child", "--steps", str(steps)]
    comp = None
    if competitor:
        comp = subprocess.Popen(me + ["--forever"], env=_env(policy, threads), stdout=subprocess.DEVNULL)
        time.sleep(1.0)  # let it import torch and start stepping
    try:
        out = subprocess.run(me, env=_env(policy, threads), capture_output=True, text=True, check=True)
    finally:
        if comp is not None:
            comp.terminate()
            comp.wait()
    ms = json.loads(out.stdout.strip().splitlines()[-1])["step_ms"]
    q = statistics.quantiles(ms, n=10)
    return {"policy": policy, "competitor": competitor, "threads": threads,
            "median_ms": round(statistics.median(ms), 2), "p90_ms": round(q[-1], 2),
            "load1": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--policies", default="unset,ACTIVE,PASSIVE")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: usable CPUs)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.steps, args.warmup, args.forever)
        return 0
    threads = args.threads or usable_cpus()
    print(f"usable CPUs {usable_cpus()}, threads {threads}, load {os.getloadavg()}")
    results = []
    for policy in args.policies.split(","):
        for competitor in (False, True):
            r = run_case(policy, competitor, args.steps, threads)
            results.append(r)
            print(f"OMP_WAIT_POLICY={policy:8s} {'with' if competitor else 'alone':5s} competitor: "
                  f"median {r['median_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms  (load {r['load1']})")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
