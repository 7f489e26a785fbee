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

from felix_train.perf.flops import FlopsPerToken, ModelShape, training_flops
from felix_train.perf.hardware import describe_device, usable_cpus
from felix_train.perf.mfu import Throughput, throughput_metrics
from felix_train.perf.peak import device_peak_flops
from felix_train.perf.precision import Precision, ResolvedPrecision, choose_precision, resolve_precision
from felix_train.perf.threads import apply_thread_policy, torch_threads

__all__ = [
    "FlopsPerToken", "ModelShape", "Precision", "ResolvedPrecision", "Throughput", "apply_thread_policy",
    "choose_precision", "describe_device", "device_peak_flops", "resolve_precision", "throughput_metrics",
    "torch_threads", "training_flops", "usable_cpus",
]
