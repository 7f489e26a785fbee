"""Throughput and model FLOPs utilisation (MFU): the figures every step, status and bench line carries.

`throughput_metrics(units, seconds, flops_per_unit, peak_flops)` is the pure formula:
`tokens_per_s = tokens / seconds`, `achieved_tflops = tokens_per_s × flops_per_token / 1e12`,
`mfu = achieved FLOP/s / peak FLOP/s` (PaLM app. B: model FLOPs, not hardware FLOPs, so recomputation
such as gradient checkpointing does not count as useful work). For GLiNER2 the unit is samples.

`Throughput` accumulates steps: `.step(tokens, seconds)` returns the step's figures (for metrics.jsonl)
and `.summary()` the run's (for status progress and the final metrics). The first `warmup_steps` are
reported but left out of the summary (unless no other step ran): kernel selection and allocator growth
are not the steady rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def throughput_metrics(units: float, seconds: float, flops_per_unit: float | None = None,
                       peak_flops: float | None = None, *, unit: str = "tokens") -> dict[str, Any]:
    """`{<unit>_per_s, achieved_tflops, mfu}`; `achieved_tflops`/`mfu` are None when their input is unknown.

    `unit` names the rate field: "tokens" gives `tokens_per_s`, "samples" gives `samples_per_s`.
    Zero or negative `seconds` gives None figures (no division by zero in a log line).
    """
    rate = units / seconds if seconds > 0 else None
    achieved = rate * flops_per_unit if rate is not None and flops_per_unit else None
    mfu = achieved / peak_flops if achieved is not None and peak_flops else None
    return {
        f"{unit}_per_s": None if rate is None else round(rate, 2),
        "achieved_tflops": None if achieved is None else round(achieved / 1e12, 6),
        "mfu": None if mfu is None else round(mfu, 4),
    }


@dataclass
class Throughput:
    """Per-step and whole-run throughput for one job.

    flops_per_unit: FLOPs per token (or per sample), e.g. `flops.training_flops(...).total`; None = unknown.
    peak_flops: the device peak in FLOP/s, e.g. `peak.device_peak_flops(precision, device)`; None = unknown.
    unit: "tokens" or "samples" (the name of the rate field).
    warmup_steps: the first steps reported by `step()` but left out of `summary()`.
    """

    flops_per_unit: float | None = None
    peak_flops: float | None = None
    unit: str = "tokens"
    warmup_steps: int = 0
    steps: int = 0
    units: float = 0.0
    seconds: float = 0.0
    total_units: float = 0.0
    total_seconds: float = 0.0

    def step(self, units: float, seconds: float) -> dict[str, Any]:
        """Record one step of `units` tokens (samples) in `seconds`; returns that step's figures."""
        self.steps += 1
        self.total_units += units
        self.total_seconds += seconds
        if self.steps > self.warmup_steps:
            self.units += units
            self.seconds += seconds
        return throughput_metrics(units, seconds, self.flops_per_unit, self.peak_flops, unit=self.unit)

    def summary(self) -> dict[str, Any]:
        """The figures over every step after the warm-up; over all steps when none came after it."""
        units, seconds = (self.units, self.seconds) if self.seconds > 0 else (self.total_units, self.total_seconds)
        return throughput_metrics(units, seconds, self.flops_per_unit, self.peak_flops, unit=self.unit)
