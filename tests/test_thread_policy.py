"""The CPU thread policy is set by the entry points before torch loads (issue 18): `felix_train.cli.main`
(`felix-train`, `python -m felix_train`) and `felix_train.run_job`. Each case runs in a fresh interpreter: the
policy writes the process environment, which OpenMP reads once, when torch loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from felix_train.perf.hardware import usable_cpus
from felix_train.perf.threads import POLICY_MARK_ENV, apply_process_policy

ROOT = Path(__file__).resolve().parents[1]
POLICY_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "FELIX_CONCURRENT_JOBS", "LOCAL_WORLD_SIZE",
               POLICY_MARK_ENV)

SCRIPT = """
import json, os, sys
{call}
print(json.dumps({{"env": {{k: os.environ.get(k) for k in {names!r}}}, "torch": "torch" in sys.modules}}))
"""
CALLS = {
    "cli": "from felix_train.cli import main\nmain(['validate', 'no-such-spec.yaml'])",
    "run_job": "import felix_train\ntry:\n    felix_train.run_job('no-such-spec.yaml', home=sys.argv[1], echo=False)\n"
               "except Exception:\n    pass",
}


def _run(entry: str, tmp_path: Path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    code = SCRIPT.format(call=CALLS[entry], names=("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "home")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**base, "PYTHONPATH": str(ROOT), **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry", ["cli", "run_job"])
def test_entry_points_set_passive_and_threads_per_job(entry, tmp_path):
    out = _run(entry, tmp_path)
    n = str(usable_cpus())
    assert out["env"] == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    if entry == "cli":
        assert out["torch"] is False  # `validate` still never imports torch

    # the worker's concurrency divides the CPUs; a user's values are kept
    shared = _run(entry, tmp_path, FELIX_CONCURRENT_JOBS=str(2 * usable_cpus()), OMP_WAIT_POLICY="ACTIVE",
                  MKL_NUM_THREADS="3")
    assert shared["env"] == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}


def test_a_child_recomputes_what_its_parents_policy_set_but_keeps_the_users():
    parent: dict[str, str] = {"MKL_NUM_THREADS": "5"}
    assert apply_process_policy(parent, cpus=8) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "8"}
    assert parent[POLICY_MARK_ENV] == "OMP_WAIT_POLICY,OMP_NUM_THREADS"
    # a launcher's rank (two on this node) inherits the parent's environment: it divides the CPUs again
    rank = {**parent, "LOCAL_WORLD_SIZE": "2"}
    apply_process_policy(rank, cpus=8)
    assert rank["OMP_NUM_THREADS"] == "4" and rank["MKL_NUM_THREADS"] == "5" and rank["OMP_WAIT_POLICY"] == "PASSIVE"
    worker_job = {**parent, "FELIX_CONCURRENT_JOBS": "3", "LOCAL_WORLD_SIZE": "2"}
    apply_process_policy(worker_job, cpus=8)
    assert worker_job["OMP_NUM_THREADS"] == "1"
    bogus = {"FELIX_CONCURRENT_JOBS": "many"}
    apply_process_policy(bogus, cpus=8)
    assert bogus["OMP_NUM_THREADS"] == "8"


def test_a_user_thread_count_sizes_both_pools():
    from felix_train.perf.threads import apply_thread_policy

    env = {"OMP_NUM_THREADS": "1"}
    apply_thread_policy(1, env, cpus=8)
    assert env["MKL_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    env = {}
    apply_thread_policy(2, env, cpus=8)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4"
