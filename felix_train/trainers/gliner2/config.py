"""The GLiNER2 trainer's settings: the job spec mapped onto gliner2's `TrainingConfig`, and its defaults.

Mapping of the spec (`training_config`):

- `learning_rate` is the task heads' LR (their weights, or their LoRA adapters where they are
  LoRA targets); `engine.encoder_learning_rate` is the encoder's LR: its LoRA adapters' under
  LoRA, its weights' in full training (the spec resolves it from the catalog's `encoder_lr_ratio`).
- `engine.lora.target_modules` names gliner2 target groups (`lora_targets`): `all-linear` =
  gliner2's default targets (`GLINER2_DEFAULT_TARGETS`: the encoder's query/key/value/dense and
  every linear layer of the task heads); `engine.lora.alpha` defaults to 2 × r.
- `engine.precision`: `auto`/`bf16` train in bf16 on a GPU that has it, `fp16` in fp16 on CUDA,
  fp32 elsewhere (`precision`).
- `engine.batch_size` is per process; eval batches hold at least 8 records; the schedule is
  linear with `engine.warmup_ratio`; the seed seeds gliner2's own `_setup_seed` (Python, NumPy,
  torch, CUDA) and the epoch order.
- gliner2's own evaluation, best-model saving, checkpoint pruning and data validation are off:
  felix evaluates, checkpoints and validates itself.

A checkpoint folder holds the files named here: `ADAPTER_DIR` (LoRA) or `MODEL_DIR` (full),
`TRAINING_STATE` and `TRAINER_STATE` (see `state.py`). `check_launch` refuses FSDP and
DeepSpeed launches: GLiNER2 trains with DDP only.
"""

from __future__ import annotations

import os

from gliner2.training.trainer import TrainingConfig

from felix_train.catalog import TrainingType
from felix_train.errors import ErrorItem, SpecError
from felix_train.trainers.context import TrainContext

# Files inside a checkpoint folder.
ADAPTER_DIR = "adapter"  # LoRA: PEFT adapter (adapter_config.json + adapter_model.safetensors)
MODEL_DIR = "model"  # full: gliner2 save_pretrained folder
TRAINING_STATE = "training_state.pt"  # optimizer, scheduler, scaler, torch RNG (torch.load weights_only)
TRAINER_STATE = "trainer_state.json"  # step, data position and order, Python/NumPy RNG, running sums

# What "all-linear" means for GLiNER2: gliner2's own default LoRA targets (the
# encoder's query/key/value/dense layers and every linear layer of the task heads).
GLINER2_DEFAULT_TARGETS = tuple(TrainingConfig().lora_target_modules)

def precision(spec_precision: str) -> tuple[bool, bool]:
    """(fp16, bf16) for `engine.precision` on this machine."""
    import torch

    cuda = torch.cuda.is_available()
    if spec_precision == "fp16":
        return cuda, False
    if spec_precision == "bf16":
        return False, cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if spec_precision == "auto":
        return False, cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return False, False


def lora_targets(spec_targets: list[str] | str | None) -> list[str]:
    """gliner2 LoRA target groups for `engine.lora.target_modules` (SpecError on an unknown name)."""
    if spec_targets in (None, "all-linear") or spec_targets == ["all-linear"]:
        return list(GLINER2_DEFAULT_TARGETS)
    from gliner2.training.lora_targets import ENCODER_PATTERNS, TASK_MODULES

    aliases = {"all_task_heads", "classification_head", "extractive_head", "relation_head", "record_head"}
    valid = {"encoder", *(f"encoder.{p}" for p in ENCODER_PATTERNS), *TASK_MODULES, *aliases}
    bad = [t for t in spec_targets if t not in valid]
    if bad:
        raise SpecError([ErrorItem(("engine", "lora", "target_modules"),
                                   f"unknown GLiNER2 LoRA target(s) {bad}; use `all-linear` or any of "
                                   f"{', '.join(sorted(valid))}", "lora_target_invalid")])
    return list(spec_targets)


def training_config(ctx: TrainContext) -> TrainingConfig:
    """gliner2's `TrainingConfig` for this job (see the module docstring for the mapping)."""
    import torch

    spec = ctx.spec
    eng = spec.engine
    lora = spec.training_type == TrainingType.LORA
    fp16, bf16 = precision(eng.precision)
    return TrainingConfig(
        output_dir=str(ctx.job.work_dir / "gliner2"), experiment_name=ctx.job.id,
        num_epochs=spec.num_epochs, max_steps=eng.max_steps or -1,
        batch_size=eng.batch_size, eval_batch_size=max(eng.batch_size, 8),
        gradient_accumulation_steps=eng.gradient_accumulation_steps,
        task_lr=spec.learning_rate,
        encoder_lr=eng.encoder_learning_rate,
        weight_decay=eng.weight_decay, max_grad_norm=eng.max_grad_norm,
        scheduler_type="linear", warmup_ratio=eng.warmup_ratio,
        fp16=fp16, bf16=bf16, eval_strategy="no", save_best=False, save_total_limit=0,
        logging_steps=eng.logging_steps, num_workers=0, pin_memory=False, seed=eng.seed, deterministic=True,
        validate_data=False, max_len=None, gradient_checkpointing=eng.gradient_checkpointing,
        # DDP: a batch without relations (say) leaves the relation head unused, and not the same one every step
        ddp_find_unused_parameters=True, ddp_static_graph=False,
        # TF32 matmuls on GPUs; exact fp32 elsewhere (this setting is process-wide in torch)
        float32_matmul_precision="high" if torch.cuda.is_available() else "highest",
        use_lora=lora, lora_r=eng.lora.r, lora_alpha=float(eng.lora.alpha or 2 * eng.lora.r),
        lora_dropout=eng.lora.dropout, lora_target_modules=lora_targets(eng.lora.target_modules) if lora else
        list(GLINER2_DEFAULT_TARGETS),
    )


def check_launch(spec) -> None:
    """SpecError when this process is one rank of an FSDP or DeepSpeed launch: GLiNER2 trains with DDP only.

    `accelerate launch` marks those launches in the environment of every rank (`ACCELERATE_USE_FSDP`,
    `ACCELERATE_USE_DEEPSPEED`); felix's own loop wraps the model in DDP, and neither sharding would apply.
    """
    true = ("1", "true", "yes")
    kind = ("FSDP" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in true
            else "DeepSpeed" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in true else None)
    if kind is None:
        return
    named = spec.engine.distributed.config or os.environ.get("FELIX_ACCELERATE_CONFIG") or "an accelerate config"
    raise SpecError([ErrorItem(
        ("engine", "distributed", "config"),
        f"GLiNER2 jobs train with DDP only, and this launch is {kind} ({named}); set "
        "`engine.distributed.config: ddp` (or `multi-node` across machines), or leave it out, to train one model "
        "replica per process (GLiNER2 models fit on one GPU)", "distributed_not_supported")])
