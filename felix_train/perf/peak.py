"""The device's matmul peak (FLOP/s per precision): measured once, cached under `$FELIX_HOME/perf/`.

MFU divides achieved FLOP/s by a peak. On CPU there is no datasheet figure that holds (turbo, AVX
frequency drops, the threads this process may use, a container's quota), so the peak is measured: square
matmuls of a few sizes with the threads the process will use, best of N, a short probe (about 1 s per
precision). On CUDA a short probe too; when it is skipped (`probe=False`) the published dense peak of
common GPUs (`PUBLISHED_PEAKS`) stands in.

The cache is one JSON file per device key (`hardware.device_key`: the CPU model and thread count, or the
GPU name): `$FELIX_HOME/perf/peak-<key>.json` = `{"key", "device", "flops": {precision: FLOP/s},
"source": {precision: "probe"|"published"}, "measured_at"}`, written atomically. Delete it (or pass
`refresh=True`) to measure again. `FELIX_PEAK_PROBE=0` turns measuring off (`probe_enabled`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from felix_train.jobs import atomic_write_json, felix_home, read_json, utcnow
from felix_train.perf.hardware import describe_device, device_key

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

PUBLISHED_PEAKS: dict[str, dict[str, float]] = {
    # Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets; fp32 is the non-tensor-core FMA peak.
    # Matched against torch.cuda.get_device_name() by substring, longest key first ("A100" before "A10").
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "H100 NVL": {"fp32": 60.0e12, "tf32": 417.5e12, "bf16": 835e12, "fp16": 835e12},
    "H100": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},  # SXM5 (HBM3)
    "H200": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},  # SXM, same die as H100 SXM
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12},
    "A10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
}

PROBE_ENV = "FELIX_PEAK_PROBE"
"""`0` (or false/no/off): never measure a peak that is not cached (tests, a machine where 2 s matter)."""

CPU_PROBE_SIZES = (256, 512, 1024)
CUDA_PROBE_SIZES = (2048, 4096, 8192)


def published_peak(gpu_name: str, precision: str) -> float | None:
    """The datasheet dense peak for a GPU name (as torch reports it) and precision; None if not in the table."""
    for key in sorted(PUBLISHED_PEAKS, key=len, reverse=True):
        if key.lower() in gpu_name.lower():
            return PUBLISHED_PEAKS[key].get(precision)
    return None


def _dtype(torch: Any, precision: str) -> Any:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def probe_matmul_flops(precision: str = "fp32", device: str = "cpu", *, sizes: tuple[int, ...] | None = None,
                       budget_s: float = 1.2, max_repeats: int = 5) -> float:
    """Best FLOP/s of square `n×n @ n×n` matmuls (2n³ FLOPs each) over `sizes`, within about `budget_s`.

    One warm-up matmul per size (kernel selection, page faults), then up to `max_repeats` timed ones while
    the budget lasts; a size whose single matmul would overrun the budget ends the probe. Uses torch's
    current thread count. `tf32` enables TF32 matmuls for the probe only.
    """
    import torch

    dtype = _dtype(torch, precision)
    cuda = str(device).startswith("cuda")
    sizes = sizes or (CUDA_PROBE_SIZES if cuda else CPU_PROBE_SIZES)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    # A private generator: the probe runs inside a job (the first one on a device), after its seed was set;
    # drawing from the global RNG there would change the job's LoRA init and shuffles (first run != rerun).
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    deadline = time.perf_counter() + budget_s
    best = 0.0
    try:
        with torch.no_grad():
            for n in sizes:
                a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
                b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
                t0 = time.perf_counter()
                torch.mm(a, b)
                sync()
                one = time.perf_counter() - t0
                for _ in range(max_repeats):
                    if time.perf_counter() + one > deadline:
                        break
                    t0 = time.perf_counter()
                    torch.mm(a, b)
                    sync()
                    one = time.perf_counter() - t0
                    best = max(best, 2.0 * n**3 / one)
                if best == 0.0:  # budget too small for even one timed run: use the warm-up
                    best = 2.0 * n**3 / one
                if time.perf_counter() + 2 * one > deadline:
                    break
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return best


def peak_cache_path(key: str, home: str | None = None) -> Path:
    """`$FELIX_HOME/perf/peak-<key>.json`."""
    return felix_home(home) / "perf" / f"peak-{key}.json"


def _current_threads() -> int | None:
    """The intra-op threads torch uses (or will: `OMP_NUM_THREADS`) without importing it; None = usable CPUs."""
    import os
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return None


def probe_enabled() -> bool:
    """Whether a missing peak may be measured: `FELIX_PEAK_PROBE` unset or anything but 0/false/no/off."""
    import os

    return os.environ.get(PROBE_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def device_peak_flops(precision: str = "fp32", device: str = "cpu", *, home: str | None = None,
                      probe: bool | None = None, refresh: bool = False) -> float | None:
    """Peak matmul FLOP/s of `device` in `precision`, from the cache or measured (then cached).

    CPU: probed, with the threads torch will use (they are part of the cache key; torch is imported
    only when a probe runs). CUDA: probed unless `probe=False`, then the published table; None when
    neither gives a figure. A cached figure wins unless `refresh=True`. The cache file holds every precision
    measured so far for the device. `probe=None` follows `FELIX_PEAK_PROBE` (`0` turns measuring off: a CPU
    then has its cached figure or None, a GPU the published one).
    """
    if probe is None:
        probe = probe_enabled()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = str(device).startswith("cuda")
    info = describe_device(device, load_torch=cuda)
    if not cuda and precision == "tf32":
        precision = "fp32"  # TF32 is a CUDA tensor-core mode; CPU fp32 matmuls are fp32
    key = device_key(info, threads=None if cuda else _current_threads())
    path = peak_cache_path(key, home)
    record = read_json(path, default=None) or {}
    if record.get("key") != key:
        record = {"key": key, "device": info, "flops": {}, "source": {}}
    flops = record["flops"].get(precision)
    if flops is not None and not refresh:
        return float(flops)
    if cuda and not probe:
        flops = published_peak(info["cuda"]["name"], precision)
        source = "published"
    elif not probe:
        return None
    else:
        flops = probe_matmul_flops(precision, device)
        source = "probe"
    if flops is None:
        return None
    record["flops"][precision] = flops
    record["source"][precision] = source
    record["measured_at"] = utcnow()
    atomic_write_json(path, record)
    return float(flops)


def device_peaks(precisions: tuple[str, ...] = ("fp32", "bf16"), device: str = "cpu", *,
                 home: str | None = None, probe: bool | None = None) -> dict[str, float | None]:
    """`{precision: FLOP/s}` for several precisions (each from the cache or measured once)."""
    return {p: device_peak_flops(p, device, home=home, probe=probe) for p in precisions}
