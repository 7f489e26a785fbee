"""`rl_config` for DPO and GRPO: keys and defaults follow TRL 1.16's `DPOConfig` / `GRPOConfig`.

Only the keys a user of the API may set are here; everything else keeps TRL's default.
Each model rejects unknown keys and checks TRL's own constraints at validation time,
so a bad combination is refused before any job is queued. No TRL import: the
defaults are copied from TRL 1.16 and a test compares them with the installed TRL.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DPOLossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_pair",
    "apo_zero", "apo_down", "discopop", "sft",
]


class DPOParams(BaseModel):
    """`rl_config` for `training_algorithm: dpo` (TRL `DPOConfig` names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="Temperature of the DPO loss; higher stays closer to the reference (TRL default 0.1).")
    loss_type: DPOLossType | list[DPOLossType] = Field("sigmoid", description="DPO loss variant, or a list combined with `loss_weights` (TRL default sigmoid).")
    loss_weights: list[float] | None = Field(None, description="One weight per entry of `loss_type` when it is a list.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Conservative-DPO label smoothing in [0, 0.5) (TRL default 0).")
    max_length: int | None = Field(1024, ge=8, description="Maximum tokens of prompt + completion (TRL default 1024).")
    truncation_mode: Literal["keep_start", "keep_end"] = Field("keep_start", description="Which end to keep when over `max_length`.")
    precompute_ref_log_probs: bool = Field(False, description="Compute reference log-probs once before training (TRL default false).")
    use_weighting: bool = Field(False, description="WPO weighting of the loss (TRL default false).")
    padding_free: bool = Field(False, description="Train without padding (TRL default false).")
    disable_dropout: bool = Field(True, description="Disable dropout in the model (TRL default true).")

    @model_validator(mode="after")
    def _weights_match(self) -> "DPOParams":
        if self.loss_weights is not None:
            n = len(self.loss_type) if isinstance(self.loss_type, list) else 1
            if len(self.loss_weights) != n:
                raise ValueError(
                    f"`loss_weights` has {len(self.loss_weights)} value(s) but `loss_type` has {n}; give one weight per loss type"
                )
        return self


class GRPOParams(BaseModel):
    """`rl_config` for `training_algorithm: grpo` (TRL `GRPOConfig` names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    reward_type: Any = Field(..., description="A reward name (`numeric_match`) or a list of `{type, weight, ...params}`; see `felix_train.rewards`.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt; the group for advantages (TRL default 8).")
    max_completion_length: int = Field(512, ge=1, description="Maximum new tokens per completion (TRL default 512).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (TRL default 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (TRL default 1.0).")
    top_k: int = Field(0, ge=0, description="Top-k sampling, 0 = off (TRL default 0).")
    repetition_penalty: float = Field(1.0, gt=0, description="Repetition penalty (TRL default 1.0).")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model (TRL default 0.0).")
    epsilon: float = Field(0.2, gt=0, description="Lower clipping range of the ratio (TRL default 0.2).")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clipping range; defaults to `epsilon`.")
    num_iterations: int = Field(1, ge=1, description="Optimisation passes per generation batch, μ in the paper (TRL default 1).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = Field("dapo", description="Loss normalisation (TRL default dapo).")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Reward std scaling (TRL default group).")
    mask_truncated_completions: bool = Field(False, description="Exclude truncated completions from the loss (TRL default false).")
    generation_batch_size: int | None = Field(None, ge=1, description="Completions generated per generation step; defaults to the global batch × steps_per_generation.")
    steps_per_generation: int | None = Field(None, ge=1, description="Optimizer steps per generation; defaults to gradient_accumulation_steps.")
    use_vllm: bool = Field(False, description="Generate with vLLM (must be installed); transformers otherwise.")
    log_completions: bool = Field(False, description="Log sampled completions.")

    @field_validator("epsilon_high")
    @classmethod
    def _eps_high(cls, v, info):
        eps = info.data.get("epsilon")
        if v is not None and eps is not None and v < eps:
            raise ValueError(f"`epsilon_high` ({v}) must be >= `epsilon` ({eps})")
        return v

    @model_validator(mode="after")
    def _exclusive(self) -> "GRPOParams":
        if self.generation_batch_size is not None and self.steps_per_generation is not None:
            raise ValueError("set `generation_batch_size` or `steps_per_generation`, not both (TRL refuses both)")
        return self


def grpo_batch_errors(params: GRPOParams, *, per_device_batch_size: int, gradient_accumulation_steps: int,
                      num_processes: int = 1) -> list[tuple[tuple[str, ...], str]]:
    """TRL's GRPO batch arithmetic (`GRPOConfig.__post_init__`), checked before queueing.

    Returns `(loc, message)` pairs; every message says which numbers to change.
    """
    errors: list[tuple[tuple[str, ...], str]] = []
    global_batch = per_device_batch_size * num_processes
    if params.generation_batch_size is None:
        spg = params.steps_per_generation or gradient_accumulation_steps
        generation_batch_size = global_batch * spg
        loc: tuple[str, ...] = ("engine", "batch_size")
        source = (f"engine.batch_size ({per_device_batch_size}) × processes ({num_processes}) × "
                  f"steps_per_generation ({spg})")
    else:
        generation_batch_size = params.generation_batch_size
        loc = ("rl_config", "generation_batch_size")
        source = f"rl_config.generation_batch_size ({generation_batch_size})"
        if generation_batch_size % global_batch != 0:
            errors.append((loc, f"{source} must be divisible by engine.batch_size × processes ({global_batch})"))
    if generation_batch_size % params.num_generations != 0:
        options = sorted({d for d in range(2, generation_batch_size + 1) if generation_batch_size % d == 0})
        errors.append((
            loc,
            f"GRPO generates {source} = {generation_batch_size} completions per step, which is not divisible by "
            f"rl_config.num_generations ({params.num_generations}); set engine.batch_size to a multiple of "
            f"{params.num_generations}, or num_generations to one of {options}",
        ))
    elif generation_batch_size // params.num_generations < 1:
        errors.append((loc, "the generation batch must hold at least one prompt group"))
    return errors


RL_PARAMS = {"dpo": DPOParams, "grpo": GRPOParams}
