"""Micro-batches that fit in memory, for the HF/TRL trainers (SFT and DPO): the same optimizer steps, no OOM kill.

A batch of 8 DPO pairs near 1,000 tokens is 16 rows of 1,000 tokens: ~50 GB of fp32 activations for SmolLM2-135M,
and on a CPU the kernel's OOM killer ends the job without a Python error. Before the first step,
`fit_in_memory` predicts the peak of the longest micro-batch with the estimate's memory model
(`felix_train.estimate.memory.predict_memory`: weights, adapters, optimizer, activations, logits) and, where it is
over the budget (`HEADROOM` of what the process may use: `perf.hardware.memory_limit_mb()`, or the GPU's memory),
splits each batch into `k` equal micro-batches with `k` times the gradient accumulation. The effective batch is
the same, and so are the optimizer steps: the length-grouped sampler orders by the effective batch, the
DataLoader's chunks of `batch / k` rows make up the same batches, and HF divides each micro-batch's mean loss by
the accumulation count, so the gradient is the batch's mean, as before (the losses per step match to float
rounding: `tests/trainers/test_lm_memory.py`). Where even one example a micro-batch does not fit, activation
checkpointing is turned on (each layer keeps its input only, ~a third more compute), and where that does not fit
either, the job fails before training with the longest example's length and what to change.

`FELIX_MEMORY_LIMIT_MB` overrides the limit (an operator running several jobs on one machine gives each its
share). The plan is made from the machine's total memory, not what is free at the moment, so a resumed job makes
the same plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from felix_train.errors import DatasetError

HEADROOM = 0.85
"""The share of the memory limit a job's predicted peak may take (the formula is within ~5 % of measured CPU peaks)."""

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


def memory_limit_mb(device: str) -> float | None:
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


def fit_in_memory(ctx, trainer, lengths: list[int], *, rows_per_example: int) -> MemoryPlan | None:
    """Plan the micro-batches for `trainer` (an HF Trainer not yet trained) and apply the plan to its arguments;
    log it. `lengths`: each training example's padded row length. None (nothing changed) when the limit is unknown.
    """
    from felix_train.estimate.memory import predict_memory

    limit = memory_limit_mb(ctx.device)
    if limit is None or not lengths:
        return None
    spec, args = ctx.spec, trainer.args
    bf16 = bool(getattr(args, "bf16", False))

    def predict(rows: int, seq_len: int, ckpt: bool) -> float:
        return predict_memory(ctx.model.path, family=spec.entry().family.value, training_type=spec.training_type.value,
                              lora_r=spec.engine.lora.r, targets=spec.engine.lora.target_modules, batch_size=rows,
                              seq_len=seq_len, bf16_base=bf16, checkpointing=ckpt)["peak_mb"]

    batch = args.per_device_train_batch_size
    plan = plan_micro_batches(predict, batch_size=batch, rows_per_example=rows_per_example, longest=max(lengths),
                              budget_mb=HEADROOM * limit, checkpointing=bool(args.activation_checkpointing))
    if plan.splits > 1:
        args.per_device_train_batch_size = plan.micro_batch
        args.per_device_eval_batch_size = min(args.per_device_eval_batch_size, plan.micro_batch)
        args.gradient_accumulation_steps *= plan.splits
        trainer._train_batch_size = args.train_batch_size  # HF copies it at construction
    if plan.checkpointing and not args.activation_checkpointing:
        args.activation_checkpointing = True  # HF turns it on at the start of `train()`
        args.activation_checkpointing_kwargs = {"use_reentrant": False}  # LoRA: the inputs need no gradient
    ctx.reporter.log(plan.describe(batch, rows_per_example))
    return plan
