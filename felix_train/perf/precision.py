"""`engine.precision`: which compute precision a job runs in, chosen for the device.

`resolve_precision(requested, device_info, measured=None)` is a pure function of the request, the device
description (`hardware.describe_device()`) and, on CPU, the measured matmul peaks (`peak.device_peaks()`):

| device | `auto` gives | why |
|---|---|---|
| CUDA, capability >= 8.0 (Ampere and later) | bf16 | native bf16 tensor cores |
| CUDA, capability < 8.0 | fp32 | bf16 is emulated there; fp16 needs loss scaling, so only on request |
| CPU with AMX (`amx_bf16`) and a measured bf16 peak above fp32 | bf16 | AMX tiles run bf16 matmuls |
| any other CPU (AVX2, AVX512, AVX512-BF16 without AMX, or no measurement) | fp32 | issue 18: a SmolLM2 step took 426 s in bf16 against 35 s in fp32 on a CPU without a fast bf16 path |
| anything else (mps, ...) | fp32 | |

An explicit `fp32`, `bf16` or `fp16` is honoured, except `fp16` on CPU (no fp16 mixed precision on CPU
in torch autocast/TRL: a ValueError says to use bf16 or fp32). Trainable weights (LoRA adapters, fresh
heads) stay fp32 whatever the result; this module only picks the compute precision.

`choose_precision(requested, device)` gathers the inputs (describing the device, and on an AMX CPU
measuring the peaks once, cached) and calls `resolve_precision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Precision(str, Enum):
    """`engine.precision` values."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


@dataclass(frozen=True)
class ResolvedPrecision:
    """The precision to run in and one sentence on why (for the job log)."""

    precision: Precision
    reason: str

    @property
    def value(self) -> str:
        return self.precision.value


def _parse(requested: str | Precision) -> Precision:
    try:
        return Precision(requested)
    except ValueError:
        valid = ", ".join(p.value for p in Precision)
        raise ValueError(f"engine.precision must be one of {valid}, got {requested!r}") from None


def resolve_precision(requested: str | Precision, device_info: dict[str, Any],
                      measured: dict[str, float | None] | None = None) -> ResolvedPrecision:
    """The precision for `requested` on the device described by `device_info` (see the module table).

    device_info: `hardware.describe_device()`'s dict: `type`, `cpu.flags`, `cuda.capability` (and
    `cuda.bf16_supported`, which wins over the capability when present: native bf16, emulation not counted).
    measured: `{"fp32": FLOP/s, "bf16": FLOP/s}` from `peak.device_peaks()`; consulted for `auto` on an
    AMX CPU only. Raises ValueError for an unknown value or `fp16` on CPU.
    """
    req = _parse(requested)
    kind = device_info.get("type", "cpu")
    if req is Precision.FP16 and kind == "cpu":
        raise ValueError("engine.precision fp16 is not supported on CPU (no fp16 mixed precision there); "
                         "use bf16 or fp32, or auto")
    if req is not Precision.AUTO:
        return ResolvedPrecision(req, f"engine.precision {req.value} requested")
    if kind == "cuda":
        cuda = device_info.get("cuda", {})
        cap = tuple(cuda.get("capability") or (0, 0))
        native = cuda.get("bf16_supported")
        native = cap >= (8, 0) if native is None else bool(native)
        what = f"CUDA capability {cap[0]}.{cap[1]}" if cuda.get("capability") else "this CUDA GPU"
        if native:
            return ResolvedPrecision(Precision.BF16, f"auto: bf16, {what} has native bf16")
        return ResolvedPrecision(Precision.FP32, f"auto: fp32, {what} emulates bf16")
    if kind != "cpu":
        return ResolvedPrecision(Precision.FP32, f"auto: fp32 on device type {kind!r}")
    flags = device_info.get("cpu", {}).get("flags", {})
    if not flags.get("amx_bf16"):
        have = [f for f, on in flags.items() if on] or ["none"]
        return ResolvedPrecision(Precision.FP32, "auto: fp32, this CPU has no AMX (bf16 is slower than fp32 "
                                 f"without it; CPU flags: {', '.join(have)})")
    fp32, bf16 = (measured or {}).get("fp32"), (measured or {}).get("bf16")
    if not fp32 or not bf16:
        return ResolvedPrecision(Precision.FP32, "auto: fp32, the CPU has AMX but no bf16/fp32 peak was measured")
    if bf16 > fp32:
        return ResolvedPrecision(Precision.BF16, f"auto: bf16, AMX CPU measures bf16 {bf16 / 1e9:.0f} GFLOP/s "
                                 f"> fp32 {fp32 / 1e9:.0f} GFLOP/s")
    return ResolvedPrecision(Precision.FP32, f"auto: fp32, AMX CPU measures bf16 {bf16 / 1e9:.0f} GFLOP/s "
                             f"<= fp32 {fp32 / 1e9:.0f} GFLOP/s")


def choose_precision(requested: str | Precision = "auto", device: str = "cpu", *,
                     home: str | None = None, info: dict[str, Any] | None = None) -> ResolvedPrecision:
    """Describe the device (unless `info` describes it already), measure the peaks where `auto` needs them
    (an AMX CPU), resolve.

    The peaks are cached under `$FELIX_HOME/perf/`, so only a device's first job pays the ~2 s probe.
    """
    from felix_train.perf.hardware import describe_device
    from felix_train.perf.peak import device_peaks

    if info is None:
        info = describe_device(device, load_torch=str(device).startswith("cuda"))
    measured = None
    if (_parse(requested) is Precision.AUTO and info["type"] == "cpu"
            and info.get("cpu", {}).get("flags", {}).get("amx_bf16")):
        measured = device_peaks(("fp32", "bf16"), device, home=home)
    return resolve_precision(requested, info, measured)
