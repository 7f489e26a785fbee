"""Performance foundations: hardware detection, the CPU thread policy, device peaks, FLOPs and MFU, precision.

Nothing here imports torch at import time; the functions that need it (`threads.torch_threads`,
`peak.probe_matmul_flops`) import it inside. The pieces:

- `hardware`: CPU flags, usable CPUs (affinity and cgroup quota), `describe_device()`.
- `threads`: `apply_thread_policy()` before torch loads, `torch_threads()` after.
- `peak`: the per-device matmul peak, measured once, cached under `$FELIX_HOME/perf/`.
- `flops`: FLOPs per token from a model config (full, LoRA, DPO, generation).
- `mfu`: `Throughput`: tokens/s, achieved TFLOP/s, MFU.
- `precision`: `engine.precision` auto/fp32/bf16/fp16 resolved for the device.
"""

from importlib import import_module

_HOMES = {
    "FlopsPerToken": "flops", "ModelShape": "flops", "training_flops": "flops",
    "describe_device": "hardware", "usable_cpus": "hardware",
    "Throughput": "mfu", "throughput_metrics": "mfu",
    "device_peak_flops": "peak",
    "Precision": "precision", "ResolvedPrecision": "precision", "choose_precision": "precision",
    "resolve_precision": "precision",
    "apply_thread_policy": "threads", "torch_threads": "threads",
}
"""Where each public name lives: loaded on first use, so that the entry points' `perf.threads` (imported before
anything else, on every `felix-train` command) does not pay for the other modules (`peak` loads `jobs`)."""

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
