"""The CPU thread policy: set before torch is imported, so OpenMP and MKL start with it.

Two things slow CPU training many-fold on a shared machine (issue 18 measured a tiny step at 443-1,330 ms
with spinning threads against 102 ms with `OMP_WAIT_POLICY=PASSIVE`):

- OpenMP's default wait policy spins idle threads for a while between parallel regions; when another
  process wants the same cores, the spinning threads steal its time and the parallel regions wait for
  descheduled threads.
- torch sizes its pool from the machine's cores, not from the affinity mask or the container's quota,
  nor from the other jobs a worker runs at once.

`apply_thread_policy()` writes the environment (only what the user did not set) and must run before
`import torch`; `apply_process_policy()` is what the entry points call first thing (`felix_train.cli.main`
for `felix-train` and `python -m felix_train`, and `felix_train.run_job`): the CPUs divided among
`FELIX_CONCURRENT_JOBS` (the worker sets it in each job's environment) times the launcher's local ranks.
`torch_threads()` fixes the intra-op pool afterwards for processes where torch was imported first (an
embedding orchestrator).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from felix_train.perf.hardware import usable_cpus

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that size the OpenMP / MKL pools; set together to the same figure."""
POLICY_VARS = ("OMP_WAIT_POLICY", *THREAD_VARS)
CONCURRENT_JOBS_ENV = "FELIX_CONCURRENT_JOBS"
"""Set by the worker in each job's environment: how many jobs it runs at once (they share the CPUs)."""
POLICY_MARK_ENV = "FELIX_THREAD_POLICY"
"""Written by `apply_process_policy`: the variables the policy set (not the user), so that a child process
(a rank of `accelerate launch`, a job started by `felix-train SPEC`) recomputes them for itself instead of
taking them for the user's."""


def threads_per_job(concurrent_jobs: int = 1, cpus: int | None = None) -> int:
    """Intra-op threads for one job: usable CPUs divided among the jobs run at once, at least 1."""
    if concurrent_jobs < 1:
        raise ValueError(f"concurrent_jobs must be at least 1, got {concurrent_jobs}")
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus // concurrent_jobs)


def apply_thread_policy(concurrent_jobs: int = 1, environ: MutableMapping[str, str] | None = None,
                        *, cpus: int | None = None) -> dict[str, str]:
    """Set `OMP_WAIT_POLICY=PASSIVE` and `OMP_NUM_THREADS`/`MKL_NUM_THREADS` = `threads_per_job()`.

    A variable the user already set (present in `environ`, even if empty) is left as it is, and a thread
    count the user gave in `OMP_NUM_THREADS` sizes MKL's pool too (`OMP_NUM_THREADS=1` alone must not leave
    MKL on two threads: different pools give different float reduction orders, and a resumed run
    would no longer reproduce an uninterrupted one bit for bit). Returns
    `{name: value}` of what was set (empty when the user fixed everything), for the log.

    Call before torch is imported: the OpenMP runtime reads these once, when torch loads it. If torch is
    already in `sys.modules` the values still go to the environment (child processes inherit them) and
    `torch_threads()` must size this process's pool.
    """
    environ = os.environ if environ is None else environ
    set_now: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = set_now["OMP_WAIT_POLICY"] = "PASSIVE"
    user = environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]
    n = user if user.isdigit() and int(user) > 0 else str(threads_per_job(concurrent_jobs, cpus))
    for name in THREAD_VARS:
        if name not in environ:
            environ[name] = set_now[name] = n
    return set_now


def concurrent_jobs(environ: MutableMapping[str, str] | None = None) -> int:
    """The processes sharing this machine's CPUs with this one: `FELIX_CONCURRENT_JOBS` (the worker's concurrency,
    default 1) times `LOCAL_WORLD_SIZE` (the ranks a launcher started on this node, default 1)."""
    environ = os.environ if environ is None else environ
    total = 1
    for name in (CONCURRENT_JOBS_ENV, "LOCAL_WORLD_SIZE"):
        try:
            total *= max(1, int(environ.get(name, "") or 1))
        except ValueError:
            pass
    return total


def apply_process_policy(environ: MutableMapping[str, str] | None = None, *, cpus: int | None = None) -> dict[str, str]:
    """`apply_thread_policy(concurrent_jobs())` for a process entry point (the CLI, `felix_train.run_job`).

    Values an ancestor's policy set (named in `FELIX_THREAD_POLICY`) are recomputed, not taken for the user's:
    a launcher's ranks divide the CPUs again. Records what it set in `FELIX_THREAD_POLICY`; returns it.
    """
    environ = os.environ if environ is None else environ
    for name in environ.get(POLICY_MARK_ENV, "").split(","):
        if name in POLICY_VARS:
            environ.pop(name, None)
    set_now = apply_thread_policy(concurrent_jobs(environ), environ, cpus=cpus)
    environ[POLICY_MARK_ENV] = ",".join(set_now)
    return set_now


def _env_threads(environ: MutableMapping[str, str]) -> int | None:
    value = environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]  # OpenMP allows "4,2" (nested levels)
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def torch_threads(concurrent_jobs: int = 1, environ: MutableMapping[str, str] | None = None,
                  *, cpus: int | None = None) -> int:
    """Size torch's intra-op pool once torch is imported; returns the thread count in use.

    The figure is `OMP_NUM_THREADS` when the environment fixes it (the user's, or the one
    `apply_thread_policy()` set), else `threads_per_job(concurrent_jobs)`. `torch.set_num_threads` is
    called only when torch's pool differs from it.
    """
    import torch

    environ = os.environ if environ is None else environ
    n = _env_threads(environ) or threads_per_job(concurrent_jobs, cpus)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def policy_summary(environ: MutableMapping[str, str] | None = None) -> str:
    """One log line: the thread figures and wait policy in effect, and whether torch was loaded first."""
    environ = os.environ if environ is None else environ
    parts = [f"{name}={environ.get(name, 'unset')}" for name in POLICY_VARS]
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"torch threads={torch.get_num_threads()}")
    if POLICY_MARK_ENV in environ:
        ours = [n for n in environ[POLICY_MARK_ENV].split(",") if n]
        parts.append(f"set by felix: {', '.join(ours) or 'none (all set by the user)'}")
    return "CPU thread policy: " + ", ".join(parts)
