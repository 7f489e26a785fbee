"""TrainingArguments for a felix job, shared by SFT, DPO and GRPO: precision for the device, GPU defaults, the
attention kernel, the job's schedule and logging cadence, and the trackers (`engine.report_to`).

`training_arguments(ctx, SFTConfig, has_eval=..., **overrides)` builds a TRL config from the resolved spec; the
callback that then drives the job is `hf_bridge.FelixCallback`. Imports transformers at module import: load this
module only inside a trainer's `run()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from felix_train.perf.precision import ResolvedPrecision
from felix_train.trainers.context import TrainContext

HF_OUTPUT_DIRNAME = "hf"
"""HF `output_dir` is `ctx.job.work_dir / "hf"`: scratch for `checkpoint-N` folders before they are committed."""


# -- TrainingArguments ---------------------------------------------------------------------------------------

def hf_output_dir(ctx: TrainContext) -> Path:
    return ctx.job.work_dir / HF_OUTPUT_DIRNAME


def bf16_supported(device: str) -> bool:
    """Whether bf16 mixed precision is a good default on `device` (CUDA with native bf16 only: Ampere or newer).

    `torch.cuda.is_bf16_supported()` alone also says yes on older GPUs (V100, T4) that only emulate bf16, many
    times slower than fp32 there: emulation is not counted.
    """
    if device != "cuda":
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the argument never counted emulation
        return bool(torch.cuda.is_bf16_supported())


def device_info(ctx: TrainContext) -> dict[str, Any]:
    """`perf.hardware.describe_device()` of the job's device; on CUDA, `bf16_supported` says whether bf16 is native."""
    from felix_train.perf.hardware import describe_device

    if ctx.device != "cuda":
        return describe_device(ctx.device)
    import torch

    info = describe_device("cuda") if torch.cuda.is_available() else {"type": "cuda", "cpu": {}, "cuda": {}}
    info["cuda"]["bf16_supported"] = bf16_supported(ctx.device)  # emulated bf16 (V100, T4) is not native
    return info


def job_precision(ctx: TrainContext) -> ResolvedPrecision:
    """`engine.precision` resolved for the job's device: `perf.precision.choose_precision`, the one decision.

    auto: bf16 on a GPU with native bf16; on a CPU with AMX where the measured bf16 matmul peak beats fp32;
    fp32 elsewhere. An explicit value is honoured where the device can run it (bf16 on any CPU too: a bf16
    frozen base under fp32 adapters, see `lm_common.model_load_kwargs`).

    Raises:
        ValueError: fp16 off a GPU, or bf16 on a GPU without native bf16.
    """
    from felix_train.perf.precision import Precision, choose_precision

    resolved = choose_precision(ctx.spec.engine.precision, ctx.device, home=str(ctx.job.home), info=device_info(ctx))
    if resolved.precision is Precision.BF16 and ctx.device == "cuda" and not bf16_supported(ctx.device):
        raise ValueError("`engine.precision: bf16` but this GPU has no native bf16; use `precision: fp16` or `auto`")
    if resolved.precision is Precision.FP16 and ctx.device != "cuda":
        raise ValueError(f"`engine.precision: fp16` needs a GPU, but this job runs on {ctx.device}; "
                         "use `precision: auto`, `fp32` or `bf16`")
    return resolved


def precision_flags(ctx: TrainContext) -> dict[str, bool]:
    """`bf16`/`fp16` for TrainingArguments from `job_precision` (bf16 autocast over a bf16 frozen base on CPU too).

    Raises:
        ValueError: bf16/fp16 asked for on a device that cannot do it.
    """
    precision = job_precision(ctx).value
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def gpu_defaults(ctx: TrainContext) -> dict[str, Any]:
    """What a CUDA run gets beyond the spec: TF32 matmuls (Ampere or newer), fused AdamW, and Liger kernels
    when `liger-kernel` is installed (never required). Empty on CPU. bf16 comes from `precision_flags`.

    Checked against transformers 5.24 / TRL 1.16: `tf32` is still a TrainingArguments field (transformers sets
    `torch.backends.fp32_precision = "tf32"` on torch >= 2.9 and raises if asked on a GPU without TF32, hence the
    check); `adamw_torch_fused` is already transformers' default on torch >= 2.8 (named for older torch);
    `use_liger_kernel` is still a field, applied by `Trainer` to the PEFT model's base. TRL 1.16 keeps only Liger's
    layer kernels (RMSNorm, RoPE, SwiGLU: it turns `fused_linear_cross_entropy` off, having its own chunked LM
    head) and warns that the flag is deprecated for TRL 2 (a FutureWarning, nothing else).
    """
    if ctx.device != "cuda":
        return {}
    from transformers.utils import is_liger_kernel_available, is_torch_tf32_available

    out: dict[str, Any] = {"optim": "adamw_torch_fused"}
    if is_torch_tf32_available():
        out["tf32"] = True
    if is_liger_kernel_available():
        out["use_liger_kernel"] = True
    return out


def attn_implementation(ctx: TrainContext) -> str | None:
    """`flash_attention_2` for `from_pretrained(attn_implementation=...)` on CUDA when `flash-attn` is installed
    and the run trains in bf16/fp16; None (transformers' default, SDPA) otherwise. Never required.
    """
    if ctx.device != "cuda" or not any(precision_flags(ctx).values()):
        return None
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if is_flash_attn_2_available() else None


def training_arguments(ctx: TrainContext, config_cls: type[TrainingArguments] = TrainingArguments, *,
                       has_eval: bool, **overrides: Any) -> TrainingArguments:
    """The TrainingArguments (or a TRL config subclass) every felix trainer shares, from the resolved spec.

    Save/eval every `engine.save_steps` / `engine.eval.steps` optimizer steps when given, else once per epoch;
    `engine.max_steps` overrides `num_epochs`. TRL's defaults that do not suit a job are overridden
    (`bf16=True` and `gradient_checkpointing=True` only where the device and the spec ask for them).
    On CUDA, `gpu_defaults` adds TF32, fused AdamW and Liger kernels (when installed).
    `overrides` are the algorithm's own fields (e.g. SFT's `max_length`, `packing`) and win over these.
    The keyword arguments are `training_kwargs(...)`'s.
    """
    return config_cls(**training_kwargs(ctx, has_eval=has_eval, **overrides))


def training_kwargs(ctx: TrainContext, *, has_eval: bool, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments `training_arguments` builds its config from (logs the GPU defaults on CUDA)."""
    spec, engine = ctx.spec, ctx.spec.engine
    resolved = job_precision(ctx)
    ctx.reporter.log(f"precision: {resolved.value} ({resolved.reason})")
    kwargs: dict[str, Any] = dict(
        output_dir=str(hf_output_dir(ctx)),
        seed=engine.seed,
        per_device_train_batch_size=engine.batch_size,
        per_device_eval_batch_size=engine.batch_size,
        gradient_accumulation_steps=engine.gradient_accumulation_steps,
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.num_epochs,
        max_steps=engine.max_steps or -1,
        warmup_steps=engine.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=engine.weight_decay,
        max_grad_norm=engine.max_grad_norm,
        lr_scheduler_type="linear",
        logging_strategy="steps",
        logging_steps=engine.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if engine.save_steps else "epoch",
        save_steps=engine.save_steps or 500,
        save_total_limit=None,  # retention is the CheckpointManager's
        save_only_model=False,  # optimizer, scheduler and RNG states: exact resume
        eval_strategy=("steps" if engine.eval.steps else "epoch") if has_eval else "no",
        eval_steps=engine.eval.steps,
        load_best_model_at_end=False,
        report_to=report_to(ctx),  # W&B / MLflow by name; TensorBoard is `tracker_callbacks`' (into the job folder)
        disable_tqdm=False,
        dataloader_num_workers=0,
        torch_compile=False,
        activation_checkpointing=engine.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        use_cpu=ctx.device == "cpu",
        # every trainable (LoRA) parameter gets a gradient each step; HF would otherwise turn DDP's search for
        # unused parameters on for a PEFT model (a graph traversal every step, and a warning that it found none)
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        restore_callback_states_from_checkpoint=False,
        bf16=resolved.value == "bf16",  # `precision_flags`
        fp16=resolved.value == "fp16",
    )
    gpu = gpu_defaults(ctx)
    kwargs.update(gpu)
    kwargs.update(overrides)
    if gpu:
        flags = (("bf16", kwargs.get("bf16")), ("fp16", kwargs.get("fp16")), ("tf32", kwargs.get("tf32")),
                 ("fused AdamW", kwargs.get("optim") == "adamw_torch_fused"),
                 ("Liger kernels", kwargs.get("use_liger_kernel")))
        used = [name for name, on in flags if on]
        ctx.reporter.log(f"GPU defaults: {', '.join(used) or 'fp32'}")
        if "use_liger_kernel" not in gpu:
            ctx.reporter.log("Liger kernels not used: liger-kernel is not installed (`pip install liger-kernel`)")
    return kwargs


# -- trackers ------------------------------------------------------------------------------------------------

def report_to(ctx: TrainContext) -> list[str] | str:
    """TrainingArguments' `report_to` from `engine.report_to`: the integrations HF starts by name (W&B, MLflow,
    configured by their own environment variables); "none" when there are none. TensorBoard is left out here:
    `tracker_callbacks` adds HF's callback pointed at the job folder (by name it would log under `output_dir`)."""
    names = [r.value for r in ctx.spec.engine.report_to if r.value != "tensorboard"]
    return names or "none"


def tracker_callbacks(ctx: TrainContext) -> list[TrainerCallback]:
    """HF's `TensorBoardCallback`, writing to the job's `tensorboard/`, when `engine.report_to` names TensorBoard.

    The trainer then owns the TensorBoard events (HF's tags: `train/loss`, `eval/loss`, ...), so the reporter
    stops writing its own (it still does for GLiNER2's loop). Pass these with `FelixCallback` to the trainer.
    """
    if not any(r.value == "tensorboard" for r in ctx.spec.engine.report_to):
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(ctx.job.tensorboard_dir)
    ctx.reporter.tensorboard = False
    return [callback]
