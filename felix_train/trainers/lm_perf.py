"""How fast an LLM job runs against what the machine allows: its CPU threads, and its throughput and MFU.

The pieces of `felix_train.perf` wired into the SFT, DPO and GRPO trainers (precision is `hf_args.job_precision`):

- `configure_threads(ctx)`: torch's intra-op pool sized by `perf.threads.torch_threads` (the CPUs this process
  may use, divided among the jobs and ranks that share them, unless `OMP_NUM_THREADS` fixes it), the policy in
  the job log, and a warning when a busy machine meets spinning OpenMP threads.
- `setup_throughput(ctx, trainer, callback, ...)`: FLOPs per token from the model's config
  (`perf.flops.training_flops`: the job's algorithm, LoRA adapters counted from the trainable parameters, the mean
  sequence length of its data) and the device's matmul peak in the job's precision (`perf.peak.device_peak_flops`,
  measured once per device and cached under `$FELIX_HOME/perf/`; `FELIX_PEAK_PROBE=0` skips measuring), handed
  to `FelixCallback`, which adds `tokens_per_s`, `achieved_tflops` and `mfu` to every logged step and to
  status.json's progress.
- `perf_metrics(callback)`: the run's figures for the final metrics (`train_tokens_per_s`, `train_mfu`,
  `flops_per_token`, `flops_formula`, `peak_tflops`, `precision`).

Light at import (torch is loaded by the functions that use it); the trainers call it inside `run()`.
"""

from __future__ import annotations

import os
from typing import Any

from felix_train.perf.flops import FlopsPerToken, training_flops
from felix_train.perf.hardware import usable_cpus
from felix_train.perf.mfu import Throughput
from felix_train.perf.threads import concurrent_jobs, policy_summary, torch_threads
from felix_train.trainers.context import TrainContext

THROUGHPUT_WARMUP_STEPS = 1
"""Logged windows left out of the run's throughput: the first step pays kernel selection and allocator growth."""


def configure_threads(ctx: TrainContext) -> int:
    """Size torch's intra-op pool (`perf.threads.torch_threads`) and log it; returns the thread count.

    torch counts the machine's cores, not the container's CPU quota or the affinity mask, nor the other jobs
    and ranks on the node; more threads than CPUs make every parallel op wait for descheduled threads. Left
    alone when OMP_NUM_THREADS is set (by the user, or by the entry point's policy before torch loaded). On a
    busy machine with OpenMP's default (spinning) wait policy the log also says how to avoid a many-fold slowdown.
    """
    cpus = usable_cpus()
    explicit = os.environ.get("OMP_NUM_THREADS")
    threads = torch_threads(concurrent_jobs())
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    ctx.reporter.log(f"CPU threads: {threads} ({'OMP_NUM_THREADS' if explicit else f'{cpus} usable CPUs'}), "
                     f"OpenMP wait policy {policy.lower() or 'default (spinning)'}")
    ctx.reporter.log(policy_summary())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if ctx.device == "cpu" and threads > 1 and policy != "PASSIVE" and load > cpus:
        ctx.reporter.log(f"the machine is busy (load {load:.1f} on {cpus} CPUs): spinning OpenMP threads can slow "
                         "CPU training many-fold here; start the job with OMP_WAIT_POLICY=PASSIVE (or "
                         "OMP_NUM_THREADS=1)", level="WARN")
    return threads


def trainable_parameters(model) -> int:
    """Parameters that get gradients (the LoRA adapters of a PEFT model)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mean_length(lengths) -> float:
    """The mean of `lengths` (at least 1)."""
    lengths = list(lengths)
    return max(1.0, sum(lengths) / len(lengths)) if lengths else 1.0


def _peak(ctx: TrainContext, trainer, precision: str) -> float | None:
    """The device's peak FLOP/s in `precision` (TF32 for fp32 on a GPU with TF32 on); None when unknown."""
    from felix_train.perf.peak import device_peak_flops

    if ctx.device == "cuda" and precision == "fp32" and getattr(trainer.args, "tf32", False):
        precision = "tf32"
    try:
        return device_peak_flops(precision, ctx.device, home=str(ctx.job.home))
    except Exception as err:  # a failed measurement costs the MFU figure, never the job
        ctx.reporter.log(f"device peak not measured ({type(err).__name__}: {err}); MFU is left out", level="WARN")
        return None


def setup_throughput(ctx: TrainContext, trainer, callback, *, algorithm: str, seq_len: float,
                     reference_forward: bool | None = None) -> Throughput:
    """Give `callback` a `Throughput` for the job: FLOPs per trained token and the device peak (on rank 0).

    `seq_len` is the mean sequence length the attention term counts; `reference_forward` whether a reference
    model's forward is paid per token (`perf.flops.training_flops`' default for the algorithm when None).
    """
    from felix_train.trainers.hf_args import job_precision

    flops: FlopsPerToken | None = None
    try:
        flops = training_flops(algorithm, "lora", trainer.model.config, round(seq_len),
                               n_lora=trainable_parameters(trainer.model), reference_forward=reference_forward)
    except (ValueError, AttributeError, TypeError) as err:
        ctx.reporter.log(f"FLOPs per token unknown for this model ({err}); MFU is left out", level="WARN")
    precision = job_precision(ctx).value
    world = getattr(getattr(trainer, "accelerator", None), "num_processes", 1) or 1
    peak = _peak(ctx, trainer, precision) if ctx.is_main_process and flops is not None else None
    throughput = Throughput(flops_per_unit=flops.total if flops else None, peak_flops=peak * world if peak else None,
                            warmup_steps=THROUGHPUT_WARMUP_STEPS)
    callback.throughput = throughput
    callback.perf_info = {"precision": precision}
    if flops is not None:
        callback.perf_info.update(flops_per_token=flops.total, flops_formula=flops.formula)
        where = f"peak {peak / 1e12:.3f} TFLOP/s per device ({precision})" if peak else "device peak unknown"
        ctx.reporter.log(f"MFU: {flops.total / 1e6:.1f} MFLOP per token ({flops.formula}; mean sequence "
                         f"{seq_len:.0f} tokens); {where}")
    if peak:
        callback.perf_info["peak_tflops"] = round(peak / 1e12, 6)
    return throughput


def perf_metrics(callback) -> dict[str, Any]:
    """The run's throughput for the final metrics (steps after the warm-up), and how MFU was counted."""
    out: dict[str, Any] = {}
    throughput = getattr(callback, "throughput", None)
    if throughput is not None and throughput.steps:
        summary = throughput.summary()
        for key, name in (("tokens_per_s", "train_tokens_per_s"), ("achieved_tflops", "train_achieved_tflops"),
                          ("mfu", "train_mfu")):
            if summary.get(key) is not None:
                out[name] = summary[key]
    out.update(getattr(callback, "perf_info", {}) or {})
    return out
