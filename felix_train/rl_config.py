"""`rl_config` for DPO and GRPO: keys and defaults follow TRL 1.16's `DPOConfig` / `GRPOConfig`.

Only the keys a user of the API may set are here; everything else keeps TRL's default.
Each model rejects unknown keys and checks, at validation time, every constraint TRL 1.16 checks
on these keys (in the config's `__post_init__` or in the trainer's constructor) that depends on
config values alone, so a bad combination is refused before any job is queued. Every refusal is
located at the field to change (`loc` `["rl_config", <field>]` once `felix_train.spec` prefixes it)
and says what the value is, what is expected and how to fix it.

No TRL import (`felix-train validate` must not import torch/trl): the defaults and the accepted values
are copied from TRL 1.16, and `tests/test_spec.py` / `tests/test_rl_config.py` compare them with the
installed TRL.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

DPOLossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]
"""The DPO losses of TRL 1.16 (`DPOConfig.loss_type`, dispatched in `DPOTrainer._compute_loss`)."""

DPO_LOSS_TYPES: tuple[str, ...] = get_args(DPOLossType)

DPO_RENAMED_LOSS_TYPES: dict[str, tuple[str, str]] = {
    # old name: (TRL 1.16 name, what the old name meant)
    "aot_pair": ("aot_unpaired",
                 "the unpaired AOT loss (chosen and rejected log-ratios sorted separately; 'aot' is the paired one)"),
}
"""DPO loss names older TRL releases accepted and TRL 1.16 does not; refused with the new name."""

DPO_SORTING_LOSS_TYPES = frozenset({"aot", "aot_unpaired"})
"""Losses that sort the batch, which TRL 1.16 refuses with `use_weighting` (`NotImplementedError`)."""

GRPOLossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
"""The GRPO losses of TRL 1.16 (`GRPOConfig.loss_type`, dispatched in `GRPOTrainer._compute_loss`)."""

GRPO_LOSS_TYPES: tuple[str, ...] = get_args(GRPOLossType)

FELIX_KEYS = frozenset({"reward_type", "chat_template"})
"""`rl_config` keys felix reads itself; every other key is TRL's, with TRL's name and default."""


def text_prompts_as_chat(chat_template: bool, tokenizer) -> bool:
    """Whether text prompts are asked as one user message (`rl_config.chat_template`, where the model has a
    template): the GRPO trainer's rule and `felix-train eval`'s."""
    return bool(chat_template) and bool(getattr(tokenizer, "chat_template", None))

GRPOScaleRewards = Literal["group", "batch", "none"]
GRPO_SCALE_REWARDS: tuple[str, ...] = get_args(GRPOScaleRewards)


def _error(typ: str, msg: str) -> PydanticCustomError:
    """An error located at the validated field (no context: the message is used as is, braces and all)."""
    return PydanticCustomError(typ, msg)


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


def _dpo_losses(loss_type: Any) -> list[str]:
    """`loss_type` as a list (TRL turns a single name into a one-element list)."""
    if loss_type is None:
        return []
    return list(loss_type) if isinstance(loss_type, list) else [loss_type]


def _shown(loss_type: Any) -> str:
    return repr(loss_type) if not isinstance(loss_type, list) else "[" + ", ".join(map(repr, loss_type)) + "]"


class DPOParams(BaseModel):
    """`rl_config` for `training_algorithm: dpo` (TRL `DPOConfig` names and defaults)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    beta: float = Field(0.1, gt=0, description="Temperature of the DPO loss; higher stays closer to the reference (TRL default 0.1).")
    loss_type: DPOLossType | list[DPOLossType] = Field(
        "sigmoid", description="DPO loss variant, or a non-empty list combined with `loss_weights` (TRL default sigmoid). "
                               f"One of {_choices(DPO_LOSS_TYPES)}.")
    loss_weights: list[float] | None = Field(None, description="One weight per entry of `loss_type` (TRL default: 1.0 each).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, validate_default=True,
        description="Label smoothing in [0, 0.5) for the robust, EXO and AOT losses; `exo_pair` needs it > 0 (TRL default 0).")
    max_length: int | None = Field(1024, ge=8, description="Maximum tokens of prompt + completion (TRL default 1024).")
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start", description="Which end to keep when over `max_length` (`keep_end` is deprecated in TRL 1.16).")
    precompute_ref_log_probs: bool = Field(False, description="Compute reference log-probs once before training (TRL default false).")
    use_weighting: bool = Field(False, description="WPO weighting of the loss; not with the `aot` losses (TRL default false).")
    padding_free: bool = Field(
        False, description="Train without padding (TRL default false). TRL 1.16 has it temporarily disabled: "
                            "it warns and pads as usual.")
    disable_dropout: bool = Field(True, description="Disable dropout in the model (TRL default true).")

    @field_validator("loss_type", mode="before")
    @classmethod
    def _known_loss_type(cls, v: Any) -> Any:
        """Refuse unknown or renamed loss names with one error at `loss_type` (not one per union member)."""
        expected = f"expected one of {_choices(DPO_LOSS_TYPES)}, or a non-empty list of them"
        if isinstance(v, list):
            if not v:
                raise _error("too_short", f"`loss_type` is an empty list; {expected}; set `loss_type: sigmoid` "
                                          "(the default) or list the losses to combine")
            entries = [(f"`loss_type[{i}]`", x) for i, x in enumerate(v)]
        else:
            entries = [("`loss_type`", v)]
        renamed = [(where, x) for where, x in entries if isinstance(x, str) and x in DPO_RENAMED_LOSS_TYPES]
        if renamed:
            where, old = renamed[0]
            new, what = DPO_RENAMED_LOSS_TYPES[old]
            raise _error("loss_type_unsupported",
                         f"{where} is {old!r}, the name older TRL releases gave {what}; TRL 1.16 calls it {new!r} "
                         f"and refuses {old!r}; {expected}; set {where} to {new!r}")
        unknown = [(where, x) for where, x in entries if not (isinstance(x, str) and x in DPO_LOSS_TYPES)]
        if unknown:
            listed = " and ".join(f"{where} is {x!r}" for where, x in unknown)
            what = "a DPO loss" if len(unknown) == 1 else "DPO losses"
            raise _error("literal_error", f"{listed}, not {what} of TRL 1.16; {expected}; "
                                          "set `loss_type` to one of these")
        return v

    @field_validator("loss_weights")
    @classmethod
    def _one_weight_per_loss(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if v is None or "loss_type" not in info.data:
            return v
        losses = _dpo_losses(info.data["loss_type"])
        if len(v) != len(losses):
            raise _error("value_error",
                         f"`loss_weights` has {len(v)} value(s) but `loss_type` {_shown(info.data['loss_type'])} has "
                         f"{len(losses)}; expected one weight per loss type (TRL 1.16 refuses other lengths); set "
                         f"`loss_weights` to {len(losses)} number(s), e.g. {[1.0] * len(losses)}, or remove it for "
                         "equal weights")
        return v

    @field_validator("label_smoothing")
    @classmethod
    def _exo_needs_smoothing(cls, v: float, info: ValidationInfo) -> float:
        if v == 0 and "exo_pair" in _dpo_losses(info.data.get("loss_type")):
            raise _error("label_smoothing_required",
                         f"`label_smoothing` is {v} with `loss_type` {_shown(info.data['loss_type'])}; the EXO loss "
                         "uses it as its ε and takes its log, so TRL 1.16 refuses 0; expected a value in (0, 0.5); "
                         "set `label_smoothing: 0.001` (the EXO paper's recommendation)")
        return v

    @field_validator("use_weighting")
    @classmethod
    def _no_weighting_when_sorting(cls, v: bool, info: ValidationInfo) -> bool:
        sorting = sorted(DPO_SORTING_LOSS_TYPES & set(_dpo_losses(info.data.get("loss_type"))))
        if v and sorting:
            raise _error("use_weighting_unsupported",
                         f"`use_weighting` is true with `loss_type` {_shown(info.data['loss_type'])}; TRL 1.16 does "
                         f"not implement WPO weighting for {_choices(tuple(sorting))} (these losses sort the pairs "
                         "of a batch, which would misalign the per-pair weights); expected `use_weighting: false` "
                         "with these losses; set `use_weighting: false` or choose another `loss_type`")
        return v


class GRPOParams(BaseModel):
    """`rl_config` for `training_algorithm: grpo` (TRL `GRPOConfig` names and defaults)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reward_type: Any = Field(..., description="A reward name (`numeric_match`) or a list of `{type, weight, ...params}`; see `felix_train.rewards`.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt; the group for advantages, at least 2 (TRL default 8).")
    max_completion_length: int = Field(512, ge=1, description="Maximum new tokens per completion (TRL default 512).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (TRL default 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling, in (0, 1] (TRL default 1.0).")
    top_k: int = Field(0, ge=0, description="Top-k sampling, 0 = off (TRL default 0).")
    repetition_penalty: float = Field(1.0, gt=0, description="Repetition penalty (TRL default 1.0).")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model (TRL default 0.0).")
    epsilon: float = Field(0.2, gt=0, description="Lower clipping range of the ratio (TRL default 0.2).")
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clipping range, at least `epsilon`; defaults to `epsilon`. With `cispo` it is "
                                "the cap ε_max of the importance weights (TRL recommends 5.0).")
    num_iterations: int = Field(1, ge=1, description="Optimisation passes per generation batch, μ in the paper (TRL default 1).")
    loss_type: GRPOLossType = Field("dapo", description=f"Loss formulation, one of {_choices(GRPO_LOSS_TYPES)} (TRL default dapo).")
    scale_rewards: GRPOScaleRewards = Field(
        "group", description="Reward std scaling: group, batch or none; true/false mean group/none as in TRL (TRL default group).")
    mask_truncated_completions: bool = Field(False, description="Exclude truncated completions from the loss (TRL default false).")
    generation_batch_size: int | None = Field(None, ge=1, description="Completions generated per generation step; defaults to the global batch × steps_per_generation. Not with `steps_per_generation`.")
    steps_per_generation: int | None = Field(None, ge=1, description="Optimizer steps per generation; defaults to gradient_accumulation_steps. Not with `generation_batch_size`.")
    use_vllm: bool = Field(False, description="Generate with vLLM (must be installed); transformers otherwise. Not with `loss_type: vespo`.")
    log_completions: bool = Field(False, description="Log sampled completions.")
    disable_dropout: bool = Field(
        False, description="Disable dropout in the model, for generation and training alike (TRL default false; "
                           "the catalog sets it true where measured: SmolLM2).")
    chat_template: bool = Field(
        True, description="felix: text prompts go to the model as one user message through its chat template, the way "
                          "a chat model is asked (and `felix-train eval` asks it after training); false: the text as is, "
                          "TRL's own behaviour. Conversational prompts always use the template.")

    @field_validator("loss_type", mode="before")
    @classmethod
    def _known_loss_type(cls, v: Any) -> Any:
        if not (isinstance(v, str) and v in GRPO_LOSS_TYPES):
            raise _error("literal_error", f"`loss_type` is {v!r}, which is not a GRPO loss of TRL 1.16; expected one "
                                          f"of {_choices(GRPO_LOSS_TYPES)}; set `loss_type` to one of these "
                                          "(`dapo` is the default)")
        return v

    @field_validator("scale_rewards", mode="before")
    @classmethod
    def _scale_rewards(cls, v: Any) -> Any:
        if isinstance(v, bool):  # TRL: True means "group", False means "none"
            return "group" if v else "none"
        if not (isinstance(v, str) and v in GRPO_SCALE_REWARDS):
            raise _error("literal_error", f"`scale_rewards` is {v!r}; expected one of {_choices(GRPO_SCALE_REWARDS)} "
                                          "(or true/false for 'group'/'none'); set `scale_rewards` to one of these")
        return v

    @field_validator("epsilon_high")
    @classmethod
    def _eps_high(cls, v: float | None, info: ValidationInfo) -> float | None:
        eps = info.data.get("epsilon")
        if v is not None and eps is not None and v < eps:
            raise _error("value_error", f"`epsilon_high` is {v} but `epsilon` is {eps}; expected `epsilon_high` >= "
                                        f"`epsilon` (the upper clipping range is at least the lower one); set "
                                        f"`epsilon_high` to at least {eps} (DAPO uses 0.28) or remove it")
        return v

    @field_validator("steps_per_generation")
    @classmethod
    def _exclusive(cls, v: int | None, info: ValidationInfo) -> int | None:
        gbs = info.data.get("generation_batch_size")
        if v is not None and gbs is not None:
            raise _error("value_error", f"`steps_per_generation` is {v} and `generation_batch_size` is {gbs}; TRL 1.16 "
                                        "derives each from the other and refuses both; expected at most one of them; "
                                        "remove `steps_per_generation` or `generation_batch_size`")
        return v

    @field_validator("use_vllm")
    @classmethod
    def _vllm_loss(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("loss_type") == "vespo":
            raise _error("use_vllm_unsupported",
                         "`use_vllm` is true with `loss_type` 'vespo'; TRL 1.16 refuses VESPO under vLLM's "
                         "importance-sampling correction in its default mode ('sequence_mask'; VESPO needs "
                         "'token_truncate' or 'token_mask', which rl_config does not set); expected `use_vllm: false` "
                         "with 'vespo'; set `use_vllm: false` or choose another `loss_type`")
        return v


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
