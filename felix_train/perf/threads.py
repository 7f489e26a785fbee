"""The CPU thread policy: set before torch is imported, so OpenMP and MKL start with it.

Two things slow CPU training many-fold on a shared machine (issue 18 measured a tiny step at 443-1,330 ms
with spinning threads against 102 ms with `OMP_WAIT_POLICY=PASSIVE`):

- OpenMP's default wait policy spins idle threads for a while between parallel regions; when another
  process wants the same cores, the spinning threads steal its time and the parallel regions wait for
  descheduled threads.
- torch sizes its pool from the machine's cores, not from the affinity mask or the container's quota,
  nor from the other jobs a worker runs at once.

`apply_thread_policy()` writes the environment (only what the user did not set) and must run before
`import torch` (the CLI, the runner's entry and the worker do it first thing); `torch_threads()` fixes
the intra-op pool afterwards for processes where torch was imported first (an embedding orchestrator).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from felix_train.perf.hardware import usable_cpus

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that size the OpenMP / MKL pools; set together to the same figure."""


def threads_per_job(concurrent_jobs: int = 1, cpus: int | None = None) -> int:
    """Intra-op threads for one job: usable CPUs divided among the jobs run at once, at least 1."""
    if concurrent_jobs < 1:
        raise ValueError(f"concurrent_jobs must be at least 1, got {concurrent_jobs}")
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus // concurrent_jobs)


def apply_thread_policy(concurrent_jobs: int = 1, environ: MutableMapping[str, str] | None = None,
                        *, cpus: int | None = None) -> dict[str, str]:
    """Set `OMP_WAIT_POLICY=PASSIVE` and `OMP_NUM_THREADS`/`MKL_NUM_THREADS` = `threads_per_job()`.

    A variable the user already set (present in `environ`, even if empty) is left as it is. Returns
    `{name: value}` of what was set (empty when the user fixed everything), for the log.

    Call before torch is imported: the OpenMP runtime reads these once, when torch loads it. If torch is
    already in `sys.modules` the values still go to the environment (child processes inherit them) and
    `torch_threads()` must size this process's pool.
    """
    environ = os.environ if environ is None else environ
    set_now: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = set_now["OMP_WAIT_POLICY"] = "PASSIVE"
    n = str(threads_per_job(concurrent_jobs, cpus))
    for name in THREAD_VARS:
        if name not in environ:
            environ[name] = set_now[name] = n
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
    parts = [f"{name}={environ.get(name, 'unset')}" for name in ("OMP_WAIT_POLICY", *THREAD_VARS)]
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"torch threads={torch.get_num_threads()}")
    return "CPU thread policy: " + ", ".join(parts)
