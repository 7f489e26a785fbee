"""What this process runs on: CPU features, the CPUs it may use, and a description of the device.

Everything here reads files (`/proc/cpuinfo`, `/proc/self/cgroup`, the cgroup CPU quota) and the
affinity mask; nothing imports torch. `describe_device()` adds torch's view (CPU capability, the CUDA
device) only when torch is already imported or `load_torch=True`, so calling it from the CLI before the
thread policy is applied does not load torch behind the policy's back.

- `cpu_flags()` / `cpu_features()`: the instruction-set flags that decide whether bf16 can be fast on a
  CPU (`amx_bf16`, `amx_tile`, `avx512_bf16`, `avx512f`, `avx2`).
- `usable_cpus()`: the affinity mask capped by the cgroup quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`),
  whichever is smaller, at least 1. torch counts the machine's cores, which oversubscribes a container.
- `memory_limit_mb()`: the machine's memory capped by the cgroup limit (v2 `memory.max`, v1
  `memory.limit_in_bytes`): what a job's micro-batches must fit in (`perf.micro_batches`).
- `describe_device()`: one dict for logs, the peak cache and `precision.resolve_precision()`.
- `device_key()`: a short file-name-safe key for the device (cache files are per device and thread count).
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

CPU_FEATURES = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
"""The CPU flags that matter for matmul speed, best first."""

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CPUINFO = Path("/proc/cpuinfo")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _cpuinfo_field(name: str, path: str | os.PathLike = PROC_CPUINFO) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo (None when absent or unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_flags(path: str | os.PathLike = PROC_CPUINFO) -> frozenset[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (`flags`; `Features` on ARM); empty if unknown."""
    text = _cpuinfo_field("flags", path) or _cpuinfo_field("Features", path) or ""
    return frozenset(text.split())


def cpu_features(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """`{flag: present}` for each of `CPU_FEATURES`."""
    flags = cpu_flags() if flags is None else flags
    return {name: name in flags for name in CPU_FEATURES}


def cpu_model(path: str | os.PathLike = PROC_CPUINFO) -> str:
    """The CPU's model name (`model name` in /proc/cpuinfo), else `platform.processor()`, else "unknown"."""
    name = _cpuinfo_field("model name", path)
    if not name:
        import platform

        name = platform.processor() or platform.machine()
    return name or "unknown"


def affinity_cpus() -> int:
    """How many CPUs the affinity mask lets this process run on (os.cpu_count() where there is no mask)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max`: "max 100000" (no limit) or "<quota> <period>" -> quota/period CPUs."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota = int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100_000
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_v2_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup v2 folder and its ancestors up to `root` (a limit anywhere above applies)."""
    rel = None
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                rel = line[3:].strip()
                break
    except OSError:
        pass
    dirs = []
    if rel:
        d = root / rel.lstrip("/")
        while d != root and root in d.parents:
            dirs.append(d)
            d = d.parent
    dirs.append(root)
    return dirs


def cgroup_cpu_quota(root: str | os.PathLike = CGROUP_ROOT,
                     proc_cgroup: str | os.PathLike = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (1.5 = 150 ms every 100 ms); None when unlimited.

    cgroup v2: the smallest `cpu.max` on the path from this process's cgroup (from /proc/self/cgroup) up
    to the root. cgroup v1: `cpu/cpu.cfs_quota_us` / `cpu.cfs_period_us` (also under `cpu,cpuacct/`);
    a quota of -1 means unlimited. Unreadable or malformed files count as no limit.
    """
    root, proc_cgroup = Path(root), Path(proc_cgroup)
    quotas = []
    for d in _cgroup_v2_dirs(root, proc_cgroup):
        try:
            q = _parse_cpu_max((d / "cpu.max").read_text())
        except (OSError, ValueError, IndexError):
            continue
        if q is not None:
            quotas.append(q)
    if quotas:
        return min(quotas)
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = int((root / sub / "cpu.cfs_quota_us").read_text())
            period = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def usable_cpus(*, root: str | os.PathLike = CGROUP_ROOT,
                proc_cgroup: str | os.PathLike = PROC_SELF_CGROUP) -> int:
    """CPUs this process may use: the affinity mask capped by the cgroup quota (rounded up), at least 1.

    A quota of 1.5 CPUs gives 2: the second thread still gets half a CPU of work done.
    """
    n = affinity_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


PROC_MEMINFO = Path("/proc/meminfo")


def memory_limit_mb(*, root: str | os.PathLike = CGROUP_ROOT, proc_cgroup: str | os.PathLike = PROC_SELF_CGROUP,
                    meminfo: str | os.PathLike = PROC_MEMINFO) -> float | None:
    """The memory this process may use, in MB: the machine's `MemTotal` capped by the smallest cgroup limit
    (v2 `memory.max` on the path to the root, v1 `memory/memory.limit_in_bytes`); None when unknown.

    The total, not what is free now: a plan made from it is the same at every resume on the same machine.
    """
    root, proc_cgroup = Path(root), Path(proc_cgroup)
    limits: list[float] = []
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) / 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for d in _cgroup_v2_dirs(root, proc_cgroup):
        try:
            text = (d / "memory.max").read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text) / 2**20)
    try:
        v1 = int((root / "memory" / "memory.limit_in_bytes").read_text())
        if 0 < v1 < 2**60:  # "no limit" is a page-rounded 2**63
            limits.append(v1 / 2**20)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def torch_cpu_capability() -> str | None:
    """torch's CPU kernel level ("AVX2", "AVX512", "DEFAULT"...) if torch is already imported, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def _cuda_info(torch: Any, index: int) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(index)
    cap = torch.cuda.get_device_capability(index)
    return {
        "name": torch.cuda.get_device_name(index),
        "capability": [int(cap[0]), int(cap[1])],
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": getattr(props, "multi_processor_count", None),
        "bf16_supported": bool(cap[0] >= 8),
    }


def describe_device(device: str | None = None, *, load_torch: bool = False) -> dict[str, Any]:
    """What this process computes on, as a JSON-ready dict.

    `{"type": "cpu"|"cuda", "cpu": {"model", "usable_cpus", "flags": {flag: bool}, "torch_capability"},
    "cuda": {"name", "capability": [major, minor], "memory_gib", "bf16_supported", ...} (CUDA only)}`.

    `device` is "cpu", "cuda" or "cuda:N"; None picks CUDA when torch is loaded and sees a GPU, else CPU.
    torch is consulted only when already imported, or imported here when `load_torch=True`.
    """
    if load_torch and "torch" not in sys.modules:
        import torch  # noqa: F401  (asked for explicitly)
    torch = sys.modules.get("torch")
    cuda_ok = bool(torch is not None and torch.cuda.is_available())
    if device is None:
        device = "cuda" if cuda_ok else "cpu"
    kind, _, idx = str(device).partition(":")
    info: dict[str, Any] = {
        "type": kind,
        "cpu": {
            "model": cpu_model(),
            "usable_cpus": usable_cpus(),
            "flags": cpu_features(),
            "torch_capability": torch_cpu_capability(),
        },
    }
    if kind == "cuda":
        if not cuda_ok:
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU "
                               f"(torch {'not imported' if torch is None else torch.__version__}); "
                               "use device 'cpu' or pass load_torch=True")
        index = int(idx) if idx else torch.cuda.current_device()
        info["cuda"] = _cuda_info(torch, index)
    return info


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "unknown"


def device_key(info: dict[str, Any], threads: int | None = None) -> str:
    """A file-name-safe key for a device from `describe_device()`: `cuda-nvidia-h100-80gb-hbm3`, `cpu-amd-epyc-2t`.

    On CPU the thread count is part of the key (the peak scales with it); `threads` overrides the
    usable CPU count.
    """
    if info.get("type") == "cuda" and "cuda" in info:
        return f"cuda-{_slug(info['cuda']['name'])}"
    cpu = info.get("cpu", {})
    n = threads if threads is not None else cpu.get("usable_cpus", 1)
    return f"cpu-{_slug(cpu.get('model', 'unknown'))}-{n}t"


def pick_device(requested: str | None = None) -> str:
    """The torch device to run on: `requested` unless it is empty or `auto`, else `cuda` when a GPU is visible,
    else `cpu`. Imports torch (call it where torch is about to be used)."""
    if requested and requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
