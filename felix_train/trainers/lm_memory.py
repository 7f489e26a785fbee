"""Micro-batches that fit in memory, for the HF/TRL trainers (SFT and DPO): the same optimizer steps, no OOM kill.

A batch of 8 DPO pairs near 1,000 tokens is 16 rows of 1,000 tokens: ~50 GB of fp32 activations for SmolLM2-135M,
and on a CPU the kernel's OOM killer ends the job without a Python error. Before the first step,
`fit_in_memory` predicts the peak of the longest micro-batch with the estimate's memory model
(`felix_train.perf.memory.predict_memory`: weights, adapters, optimizer, activations, logits) and, where it is
over the budget (`HEADROOM` of what the process may use: `perf.hardware.memory_limit_mb()`, or the GPU's memory),
splits each batch into `k` equal micro-batches with `k` times the gradient accumulation. The effective batch is
the same, and so are the optimizer steps: the length-grouped sampler orders by the effective batch, the
DataLoader's chunks of `batch / k` rows make up the same batches, and HF divides each micro-batch's mean loss by
the accumulation count, so the gradient is the batch's mean, as before (the losses per step match to float
rounding: `tests/trainers/test_lm_memory.py`). Where even one example a micro-batch does not fit, activation
checkpointing is turned on (each layer keeps its input only, ~a third more compute), and where that does not fit
either, the job fails before training with the longest example's length and what to change.

The plan and its budget are `felix_train.perf.micro_batches`'s (`felix-train estimate` shows the same plan before
anything is queued); this module applies it to an HF Trainer.
"""

from __future__ import annotations

from felix_train.perf.micro_batches import MemoryPlan, job_memory_limit_mb, plan_for, rows_per_example


def fit_in_memory(ctx, trainer, lengths: list[int]) -> MemoryPlan | None:
    """Plan the micro-batches for `trainer` (an HF Trainer not yet trained) and apply the plan to its arguments;
    log it. `lengths`: each training example's padded row length. None (nothing changed) when the limit is unknown.
    """
    limit = job_memory_limit_mb(ctx.device)
    if limit is None or not lengths:
        return None
    args = trainer.args
    batch = args.per_device_train_batch_size
    plan = plan_for(ctx.spec, ctx.model.path, longest=max(lengths), limit_mb=limit, batch_size=batch,
                    bf16=bool(getattr(args, "bf16", False)), checkpointing=bool(args.activation_checkpointing))
    if plan.splits > 1:
        args.per_device_train_batch_size = plan.micro_batch
        args.per_device_eval_batch_size = min(args.per_device_eval_batch_size, plan.micro_batch)
        args.gradient_accumulation_steps *= plan.splits
        trainer._train_batch_size = args.train_batch_size  # HF copies it at construction
    if plan.checkpointing and not args.activation_checkpointing:
        args.activation_checkpointing = True  # HF turns it on at the start of `train()`
        args.activation_checkpointing_kwargs = {"use_reentrant": False}  # LoRA: the inputs need no gradient
    ctx.reporter.log(plan.describe(batch, rows_per_example(ctx.spec)))
    return plan
