"""How an LLM job's batches fit in memory: the micro-batch plan, from the memory model (`perf.memory`).

A job (SFT, DPO) whose longest batch is predicted over its memory budget splits each batch into `k` equal
micro-batches with `k` times the gradient accumulation (the same optimizer steps), then turns on activation
checkpointing, and fails before training where even that does not fit (`plan_micro_batches`). The trainers apply
the plan (`trainers.lm_memory.fit_in_memory`); `felix-train estimate` shows it (`estimate.micro_batches`). No
torch here except to read a GPU's memory.

The budget is `HEADROOM` of what the process may use: `FELIX_MEMORY_LIMIT_MB` where set (an operator running
several jobs on one machine gives each its share), else the GPU's memory, else the machine's `MemTotal` capped by
the cgroup (`perf.hardware.memory_limit_mb`) and shared among this node's processes. The total, not what is free
at the moment: a resumed job makes the same plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from felix_train.catalog import Algorithm
from felix_train.errors import DatasetError

HEADROOM = 0.85
"""The share of the memory limit a job's predicted peak may take (the formula came within ~10 % of the measured CPU
peaks: SmolLM2 SFT, 8 rows of ~470 tokens, 11.5 GB predicted for 12.5 GB measured)."""

MEMORY_LIMIT_ENV = "FELIX_MEMORY_LIMIT_MB"


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int  # examples per forward/backward
    splits: int  # micro-batches per batch (the accumulation is multiplied by this)
    checkpointing: bool  # activation checkpointing turned on by the plan (or asked for by the spec)
    peak_mb: float  # predicted peak of the longest micro-batch
    budget_mb: float
    longest: int  # the longest example's padded row length, in tokens

    def describe(self, batch_size: int, rows_per_example: int) -> str:
        rows = f" ({self.micro_batch * rows_per_example} rows)" if rows_per_example > 1 else ""
        how = (f"{self.splits} micro-batches of {self.micro_batch}{rows} per batch of {batch_size}"
               if self.splits > 1 else f"batches of {batch_size}{rows} as asked")
        ckpt = ", activation checkpointing on" if self.checkpointing else ""
        return (f"memory: {how}{ckpt}; the longest ({self.longest} tokens a row) is predicted at "
                f"{self.peak_mb / 1024:.1f} GB of a {self.budget_mb / 1024:.1f} GB budget")


def divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def plan_micro_batches(predict: Callable[[int, int, bool], float], *, batch_size: int, rows_per_example: int,
                       longest: int, budget_mb: float, checkpointing: bool = False) -> MemoryPlan:
    """The largest micro-batch (a divisor of `batch_size`) whose predicted peak fits `budget_mb`.

    `predict(rows, seq_len, checkpointing)` is the peak in MB of one forward/backward over `rows` rows of
    `seq_len` tokens. Smaller micro-batches without checkpointing come first (on a CPU the cost a token hardly
    depends on the batch; checkpointing recomputes every layer), then checkpointing from the largest again.

    Raises:
        DatasetError: not even one example fits with checkpointing.
    """
    for ckpt in ((True,) if checkpointing else (False, True)):
        for micro in divisors_descending(batch_size):
            peak = predict(micro * rows_per_example, longest, ckpt)
            if peak <= budget_mb:
                return MemoryPlan(micro, batch_size // micro, ckpt, peak, budget_mb, longest)
    peak = predict(rows_per_example, longest, True)
    raise DatasetError(
        f"the longest training example ({longest} tokens a row, {rows_per_example} row(s)) needs ~{peak / 1024:.1f} GB "
        f"even alone in its micro-batch with activation checkpointing, over this job's memory budget of "
        f"{budget_mb / 1024:.1f} GB ({HEADROOM:.0%} of the limit); lower `engine.max_length` (and "
        "`rl_config.max_length` for DPO) with `engine.length_policy: truncate` or `drop`, or run on a machine with "
        f"more memory (or raise `{MEMORY_LIMIT_ENV}` if the limit read from the machine is wrong)")


def job_memory_limit_mb(device: str) -> float | None:
    """What this process may use: `FELIX_MEMORY_LIMIT_MB`, else the GPU's memory (CUDA), else the machine's or
    cgroup's limit shared among the processes of this node (CPU)."""
    if os.environ.get(MEMORY_LIMIT_ENV):
        return float(os.environ[MEMORY_LIMIT_ENV])
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**20
    from felix_train.perf.hardware import memory_limit_mb as machine_limit

    limit = machine_limit()
    return None if limit is None else limit / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def rows_per_example(spec) -> int:
    """Batch rows an example takes: a DPO pair is two (chosen and rejected, padded alike), anything else one."""
    return 2 if spec.training_algorithm == Algorithm.DPO else 1


def plan_for(spec, model_path, *, longest: int, limit_mb: float, batch_size: int | None = None, bf16: bool = False,
             checkpointing: bool | None = None, baseline_mb: float | None = None) -> MemoryPlan:
    """`plan_micro_batches` for a resolved LLM spec, with the estimate's memory model of `model_path` (the job's
    and `felix-train estimate`'s one rule). DatasetError where nothing fits."""
    from felix_train.perf.memory import predict_memory

    def predict(rows: int, seq_len: int, ckpt: bool) -> float:
        return predict_memory(model_path, family=spec.entry().family.value, training_type=spec.training_type.value,
                              lora_r=spec.engine.lora.r, targets=spec.engine.lora.target_modules, batch_size=rows,
                              seq_len=seq_len, bf16_base=bf16, checkpointing=ckpt, baseline_mb=baseline_mb)["peak_mb"]

    ckpt = spec.engine.gradient_checkpointing if checkpointing is None else checkpointing
    return plan_micro_batches(predict, batch_size=batch_size or spec.engine.batch_size,
                              rows_per_example=rows_per_example(spec), longest=longest, budget_mb=HEADROOM * limit_mb,
                              checkpointing=ckpt)
