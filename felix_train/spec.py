"""The job spec: the `POST /felix/training-jobs` body plus the engine's own section.

`load_spec(path)` reads YAML or JSON; `validate_spec(data)` applies every rule of
DESIGN.md and returns the resolved spec (defaults filled in) or raises `SpecError`
with every problem as `{loc, msg, type}` items, like FastAPI's 422 body.

Light on purpose: importing this module never imports torch.
"""

from __future__ import annotations

import difflib
import os
import secrets
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from felix_train.budgets import Duration
from felix_train.catalog import (
    Algorithm,
    BaseModelEntry,
    ModelFamily,
    TrainingType,
    catalog_ids,
    get_entry,
    is_checkpoint_uuid,
)
from felix_train.errors import CheckpointNotFound, ErrorItem, SpecError
from felix_train.jobs import JOB_ID_PATTERN
from felix_train.spec_files import (  # noqa: F401 - re-exported: `felix_train.spec.load_spec_file` keeps working
    ACCELERATE_CONFIG_DIR, find_accelerate_config, load_spec_file,
)
from felix_train.rl_config import RL_PARAMS, DPOParams, GRPOParams, grpo_batch_errors

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,127}$"
DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class LengthPolicy(str, Enum):
    """What to do with a record longer than `engine.max_length`."""

    ERROR = "error"  # refuse at validation, naming the lines and their lengths
    TRUNCATE = "truncate"  # cut to max_length, counted and reported
    DROP = "drop"  # leave the record out, counted and reported


class GenerationBackend(str, Enum):
    """`engine.generation`: what generates GRPO's completions."""

    TRANSFORMERS = "transformers"  # `model.generate`, batched, with the KV cache
    VLLM = "vllm"  # TRL's colocated vLLM engine (`use_vllm=True, vllm_mode="colocate"`): CUDA, vllm installed


class ReportTo(str, Enum):
    """A tracker for `engine.report_to`: TrainingArguments' own integration of that name (SFT, DPO, GRPO).

    TensorBoard events land in the job folder's `tensorboard/`; W&B and MLflow are configured by their own
    environment variables (`WANDB_PROJECT`, `MLFLOW_TRACKING_URI`, ...) and need their package installed where
    the job runs (a job naming a missing one fails at start, saying which to install). GLiNER2 jobs report to
    TensorBoard only.
    """

    TENSORBOARD = "tensorboard"
    WANDB = "wandb"
    MLFLOW = "mlflow"


REPORT_TO_PACKAGES = {ReportTo.TENSORBOARD: "tensorboard", ReportTo.WANDB: "wandb", ReportTo.MLFLOW: "mlflow"}
"""The package each tracker needs where the job runs (`pip install <package>`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class DatasetRef(_Strict):
    name: str = Field(..., pattern=DATASET_NAME_PATTERN, description="Name of a dataset in the `ready` state.")


class LoraSpec(_Strict):
    """LoRA adapter shape (ignored for `training_type: full`)."""

    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha; defaults to 2 × r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt; default from the catalog (`all-linear` for LLMs, the encoder's attention/FFN for GLiNER2)."
    )


class EvalSplit(str, Enum):
    """How `engine.eval.fraction` holds records out (GLiNER2 entity data; other data splits at random)."""

    UNSEEN_MENTION = "unseen_mention"  # eval records' mentions never occur in the training part
    RANDOM = "random"  # a seeded random sample


class EvalSpec(_Strict):
    """Where eval data comes from and how often to evaluate."""

    fraction: float = Field(0.1, ge=0, lt=1, description="Held-out fraction of the training records (0 = no eval split).")
    split: EvalSplit = Field(
        EvalSplit.UNSEEN_MENTION, description="GLiNER2 entity data: `unseen_mention` (default) holds out records whose "
        "mentions occur nowhere in the training part (what new text looks like), falling back to `random` with seen and "
        "unseen F1 reported apart where fewer than 30 such records exist; `random`: a seeded random sample.")
    dataset: str | None = Field(None, pattern=DATASET_NAME_PATTERN, description="A ready dataset to evaluate on instead of a held-out fraction.")
    steps: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps; default once per epoch.")


class ExportSpec(_Strict):
    merged: bool = Field(False, description="Also write a merged model (LoRA folded into the base) under `model/merged/`.")


class DistributedSpec(_Strict):
    config: str | None = Field(None, description="An accelerate config: a file path, or a bundled name (ddp, fsdp, deepspeed-zero2, deepspeed-zero3, multi-node: felix_train/configs/accelerate/).")
    num_processes: int = Field(1, ge=1, le=1024, description="Processes for `accelerate launch` (the worker launches them).")


class SpanLossSpec(_Strict):
    """GLiNER2 span loss (`felix_train.trainers.gliner2.loss`); the defaults are gliner2's own loss."""

    positive_weight: float = Field(1.0, gt=0, le=1000, description="A gold span cell's loss times this (GLiNER's focal "
                                   "alpha a is a / (1 - a)); > 1 counters the negatives that outnumber entities.")
    focal_gamma: float = Field(0.0, ge=0, le=10, description="Focal loss: each cell's loss times (1 - p_t)^gamma, so "
                               "cells already right (mostly easy negatives) count for little; 0 = plain BCE.")
    negative_drop: float = Field(0.5, ge=0, lt=1, description="Share of negative span cells left out of the loss at "
                                 "random in each step (gliner2's masking rate).")


class EngineSpec(_Strict):
    """What the API leaves to the backend. Every field has a default that trains well."""

    job_id: str | None = Field(None, pattern=JOB_ID_PATTERN, description="Job folder id; the same id resumes the job.")
    home: str | None = Field(None, description="Output root; default `$FELIX_HOME` (~/.felix).")
    dataset_owner: int | None = Field(None, ge=0, description="Set by the service: the user whose datasets the names "
                                      "refer to (theirs, then the built-ins); absent: the shared registry.")
    seed: int = Field(42, ge=0, lt=2**32, description="Seed for data order, splits and initialisation "
                      "(0 ≤ seed < 2**32, what numpy and torch accept).")
    batch_size: int | None = Field(None, ge=1, le=4096, description="Per-device batch size; default from the catalog.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    max_length: int | None = Field(None, ge=8, le=1_000_000, description="Maximum tokens per record; default from the catalog.")
    length_policy: LengthPolicy = Field(LengthPolicy.ERROR, description="Records over max_length: error (refuse), truncate or drop.")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    encoder_learning_rate: float | None = Field(None, gt=0, le=1, description="GLiNER2 full training: encoder LR (default learning_rate / 50).")
    max_steps: int | None = Field(None, ge=1, description="Stop after N optimizer steps (overrides num_epochs).")
    max_time: Duration = Field(None, description="Training-time budget: seconds (`30`) or a duration (`\"90s\"`, "
                               "`\"30m\"`, `\"2h\"`), stored as seconds. At the first step boundary past it the job saves a "
                               "checkpoint and its final model and ends `complete`, with `stopped_by: max_time` in its "
                               "metrics. Counts the training loop's wall time (evals and checkpoint saves included; "
                               "model loading, data preparation and the final export not) over every run of the job, "
                               "up to the checkpoint a resumed run starts from.")
    max_tokens: int | None = Field(None, ge=1, description="Trained-tokens budget, counted like `trained_tokens`: "
                                   "input tokens (non-padding) for decoder LLMs, training records (samples) for "
                                   "GLiNER2, over every run of the job. Reached: as `max_time` "
                                   "(`stopped_by: max_tokens`).")
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between metrics.jsonl lines.")
    save_steps: int | None = Field(None, ge=1, description="Optimizer steps between checkpoints; default once per epoch.")
    keep_last: int = Field(2, ge=1, le=100, description="Checkpoints kept besides the best one.")
    report_to: list[ReportTo] = Field(default_factory=lambda: [ReportTo.TENSORBOARD], description="Trackers (TrainingArguments' "
                                      "integrations); TensorBoard events land in the job folder; GLiNER2: tensorboard only.")
    packing: bool | Literal["auto"] = Field(
        "auto", description="SFT: `auto` = no packing: padding-free batches (one unpadded row, per-example attention) where "
        "the model runs flash attention, else padded batches of similar lengths (length-grouped, exact, resume-exact); "
        "`true` = TRL bfd packing (per-document attention; batch_size counts packed rows of max_length tokens); "
        "`false` = plain padding, random order.")
    completion_only_loss: bool = Field(True, description="SFT loss on assistant turns / completions only.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (off on CPU unless asked).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 where the device supports it, else fp32.")
    generation: GenerationBackend = Field(GenerationBackend.TRANSFORMERS, description="GRPO: what generates the "
                                          "completions: `transformers` (batched, KV cache) or `vllm` (TRL's colocated vLLM "
                                          "engine; needs a GPU and vllm installed).")
    export: ExportSpec = Field(default_factory=ExportSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    early_stopping_patience: int | None = Field(None, ge=1, le=1000, description="Stop after this many evals in a row "
                                                "without a better eval F1 (the best checkpoint is exported); default off.")
    label_verbalize: bool = Field(True, description="GLiNER2: ask the model for labels as words (`creative-work` → "
                                  "`creative work`, `B-PER` → `person`); results keep the dataset's labels.")
    label_descriptions: dict[str, str] | None = Field(None, description="GLiNER2: `{label: description}` given to the "
                                                      "model with the label (over the datasets' `entity_descriptions`).")
    span_loss: SpanLossSpec = Field(default_factory=SpanLossSpec, description="GLiNER2: the span loss (positive "
                                    "weight, focal gamma, negative drop); fields left unset come from the catalog's "
                                    "`default_span_loss`, else gliner2's own loss.")
    ner_decoding: Literal["auto", "flat", "nested"] = Field("auto", description="GLiNER2 entities: `flat` keeps, "
        "among overlapping spans of any label, only the highest-scoring one (GLiNER's flat NER); `nested` keeps "
        "gliner2's label-by-label answer; `auto` = flat unless a training record has gold mentions of two labels on "
        "overlapping spans. Saved with the model (`decoding`) and used by eval, `felix-train eval` and serving.")


class JobSpec(_Strict):
    """A training job: the API body (top level) and the engine section."""

    base_model: str = Field(..., min_length=1, description="Catalog id (`GET /base-models`) or a checkpoint UUID.")
    datasets: list[DatasetRef] = Field(..., min_length=1, max_length=64, description="Ready datasets, trained on together.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="Job name; generated when absent.")
    project_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="Project the job belongs to.")
    training_type: TrainingType = Field(TrainingType.LORA, description="`lora` (default) or `full` (GLiNER encoders only).")
    training_algorithm: Algorithm = Field(Algorithm.SFT, description="`sft` (default), `grpo` or `dpo`.")
    rl_config: dict[str, Any] | None = Field(None, description="Required for grpo/dpo, absent for sft; TRL-aligned keys.")
    num_epochs: int | None = Field(None, ge=1, le=1000, description="Epochs; default per base model.")
    learning_rate: float | None = Field(None, gt=0, le=1, description="Peak learning rate; default per base model and training type.")
    engine: EngineSpec = Field(default_factory=EngineSpec)

    # -- filled by validate_spec ------------------------------------------------------
    def entry(self) -> BaseModelEntry:
        """The catalog entry of the base model (through the checkpoint for a UUID).

        Raises:
            SpecError: the model is not in the catalog (a spec not resolved by `validate_spec`, or a stored
                spec whose model has left the catalog).
        """
        entry = get_entry(self.catalog_model)
        if entry is None:
            raise SpecError([ErrorItem(("base_model",), f"base model {self.catalog_model!r} is not in the catalog; "
                                       f"use one of {', '.join(catalog_ids())} (`felix-train models list`)",
                                       "unknown_base_model")])
        return entry

    @property
    def catalog_model(self) -> str:
        return self.engine_meta.get("catalog_model", self.base_model)

    @property
    def engine_meta(self) -> dict:
        return getattr(self, "_meta", {})

    def rl(self) -> DPOParams | GRPOParams | None:
        if self.rl_config is None:
            return None
        return RL_PARAMS[self.training_algorithm.value].model_validate(self.rl_config)

    def hyperparameters(self) -> dict[str, Any]:
        """The training hyperparameters of a resolved spec, for status.json's and the API's `hyperparameters`.

        Epochs, learning rate, per-device batch size, gradient accumulation, max steps, max length and its
        policy, warm-up, weight decay, clipping, seed, precision, LoRA `{r, alpha, dropout, target_modules}`
        (null for `training_type: full`), `rl_config` with every default filled (null for sft), and the budgets
        (`max_time` in seconds, `max_tokens`). `encoder_learning_rate` null means the trainer's default (GLiNER2:
        learning_rate / 50 full, / 4 LoRA).
        """
        e = self.engine
        lora = None
        if self.training_type == TrainingType.LORA:
            lora = {"r": e.lora.r, "alpha": e.lora.alpha, "dropout": e.lora.dropout,
                    "target_modules": e.lora.target_modules}
        return {
            "num_epochs": self.num_epochs, "learning_rate": self.learning_rate, "batch_size": e.batch_size,
            "gradient_accumulation_steps": e.gradient_accumulation_steps, "max_steps": e.max_steps,
            "max_length": e.max_length, "length_policy": e.length_policy.value, "warmup_ratio": e.warmup_ratio,
            "weight_decay": e.weight_decay, "max_grad_norm": e.max_grad_norm, "seed": e.seed,
            "precision": e.precision, "encoder_learning_rate": e.encoder_learning_rate, "lora": lora,
            "rl_config": self.rl_config, "max_time": e.max_time, "max_tokens": e.max_tokens,
        }

    def to_json(self) -> dict:
        data = self.model_dump(mode="json")
        data["catalog_model"] = self.catalog_model
        return data


# -- loading: `felix_train.spec_files` (load_spec_file, find_accelerate_config) --------------------------------


# -- validation ---------------------------------------------------------------------------

def _fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys at `loc` of a JobSpec (walking nested models)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _convert(err: ValidationError, root: type[BaseModel], prefix: tuple = ()) -> list[ErrorItem]:
    items = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _fields_of(root, loc[:-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            msg = f"unknown field `{key}`{hint} Valid fields: {', '.join(valid)}"
        elif e["type"] == "missing":
            msg = f"`{loc[-1]}` is required"
        elif e["type"] == "enum" and "expected" in (e.get("ctx") or {}):
            msg = f"{msg}; got {e.get('input')!r}"
        elif e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing",
                           "int_from_float", "int_type"):
            msg = f"{msg}; got {e.get('input')!r}"
        elif e["type"] == "value_error" and msg.startswith("Value error, "):  # the validator's own words
            msg = msg[len("Value error, "):]
        items.append(ErrorItem(prefix + loc, msg, e["type"]))
    return items


def generate_name(base_model: str, algorithm: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{base_model.split('/')[-1][:40]}-{algorithm}-{stamp}-{secrets.token_hex(2)}"



def _sharded_launch(accelerate: dict) -> str | None:
    """'FSDP' or 'DeepSpeed' when an accelerate config's `distributed_type` says so; None otherwise."""
    return {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(str(accelerate.get("distributed_type", "")).upper())


def validate_spec(data: dict | JobSpec, *, home: str | os.PathLike | None = None,
                  check_datasets: bool = True) -> JobSpec:
    """Validate a spec and return it resolved (defaults filled in); raise SpecError listing every problem.

    With `check_datasets`, every dataset must be registered, `ready` and of a format
    the algorithm accepts (and GRPO rewards may only read columns the data has).
    """
    if isinstance(data, JobSpec):
        data = data.model_dump(mode="json", exclude_none=True)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_convert(err, JobSpec)) from None
    home = home if home is not None else spec.engine.home
    errors: list[ErrorItem] = []

    accelerate = None
    if spec.engine.distributed.config:
        try:
            accelerate = find_accelerate_config(spec.engine.distributed.config)[1]
        except SpecError as err:
            errors.extend(err.errors)

    # base model: a catalog id or a checkpoint UUID
    entry: BaseModelEntry | None = get_entry(spec.base_model)
    checkpoint = None
    if entry is None and is_checkpoint_uuid(spec.base_model):
        from felix_train.checkpoints import find_checkpoint

        try:
            checkpoint, _ = find_checkpoint(spec.base_model, home)
        except CheckpointNotFound as err:
            errors.append(ErrorItem(("base_model",), str(err), "unknown_checkpoint"))
        else:
            entry = get_entry(checkpoint.base_model)
            if entry is None:
                errors.append(ErrorItem(("base_model",), f"checkpoint {spec.base_model} continues base model "
                                        f"{checkpoint.base_model!r}, which is not in the catalog; start from a "
                                        f"catalog model instead: {', '.join(catalog_ids())}",
                                        "checkpoint_base_model_unknown"))
    elif entry is None:
        close = difflib.get_close_matches(spec.base_model, catalog_ids(), n=1, cutoff=0.5)
        hint = f"did you mean `{close[0]}`? " if close else ""
        errors.append(ErrorItem(("base_model",), f"unknown base model {spec.base_model!r}; {hint}"
                                f"`felix-train models list` shows the catalog: {', '.join(catalog_ids())}; "
                                "a checkpoint UUID is accepted too", "unknown_base_model"))

    algo = spec.training_algorithm
    if entry is not None:
        if spec.training_type not in entry.training_types:
            what = ("decoder LLMs are LoRA-only" if entry.family == ModelFamily.CAUSAL_LM
                    else f"{entry.id} allows {', '.join(t.value for t in entry.training_types)}")
            errors.append(ErrorItem(("training_type",), f"`training_type: {spec.training_type.value}` is for GLiNER "
                                    f"encoders only; {what}: set `training_type: lora`", "training_type_not_allowed"))
        if checkpoint is not None and checkpoint.training_type != spec.training_type.value:
            errors.append(ErrorItem(("training_type",), f"checkpoint {spec.base_model} was trained with "
                                    f"`{checkpoint.training_type}`; a job continuing it must use the same "
                                    f"training_type, got `{spec.training_type.value}`", "checkpoint_training_type_mismatch"))
        if algo != Algorithm.SFT and not entry.rl_verified:
            family_note = " (GLiNER2 encoders train with sft only)" if entry.family == ModelFamily.GLINER2 else ""
            verified = [e.id for e in _rl_verified()]
            errors.append(ErrorItem(("training_algorithm",), f"{entry.id} is not verified for `{algo.value}`{family_note}; "
                                    f"use `training_algorithm: sft` or one of the RL-verified models: {', '.join(verified)}",
                                    "model_not_rl_verified"))
        targets = spec.engine.lora.target_modules
        if entry.valid_lora_targets and isinstance(targets, list):
            bad = [t for t in targets if t not in entry.valid_lora_targets]
            if bad:
                errors.append(ErrorItem(("engine", "lora", "target_modules"), f"unknown {entry.family.value} LoRA "
                                        f"target(s) {bad}; use any of {', '.join(entry.valid_lora_targets)}",
                                        "lora_target_invalid"))
        trackers = [r for r in spec.engine.report_to if r != ReportTo.TENSORBOARD]
        if entry.family == ModelFamily.GLINER2 and trackers:
            errors.append(ErrorItem(("engine", "report_to"), f"GLiNER2 jobs report to TensorBoard only, got "
                                    f"{', '.join(r.value for r in trackers)}; set `engine.report_to: [tensorboard]` "
                                    "(or `[]`)", "report_to_not_supported"))
        if entry.family == ModelFamily.GLINER2 and spec.engine.packing is True:
            errors.append(ErrorItem(("engine", "packing"), "packing applies to decoder LLM SFT only; remove it for GLiNER2",
                                    "packing_not_supported"))
        sharded = _sharded_launch(accelerate) if accelerate else None
        if entry.family == ModelFamily.GLINER2 and sharded:
            errors.append(ErrorItem(("engine", "distributed", "config"), f"GLiNER2 jobs train with DDP only; "
                                    f"{spec.engine.distributed.config!r} is a {sharded} launch. Set "
                                    "`engine.distributed.config: ddp` (or `multi-node`), or leave it out: one model "
                                    "replica per process (GLiNER2 models fit on one GPU)", "distributed_not_supported"))

    # rl_config: required for grpo/dpo, absent for sft
    rl_params = None
    if algo == Algorithm.SFT and spec.rl_config is not None:
        errors.append(ErrorItem(("rl_config",), "`rl_config` must be absent for `sft`; remove it or set "
                                "`training_algorithm: dpo` or `grpo`", "rl_config_forbidden"))
    elif algo != Algorithm.SFT and spec.rl_config is None:
        example = "{reward_type: numeric_match}" if algo == Algorithm.GRPO else "{beta: 0.1}"
        errors.append(ErrorItem(("rl_config",), f"`rl_config` is required for `{algo.value}`; give at least {example}",
                                "rl_config_required"))
    elif algo != Algorithm.SFT:
        if algo == Algorithm.GRPO and "reward_type" not in spec.rl_config:
            errors.append(ErrorItem(("rl_config", "reward_type"), "`reward_type` is required for GRPO: a reward name "
                                    "(e.g. `numeric_match`) or a list of `{type, weight, ...}`", "reward_type_required"))
        else:
            defaults = entry.rl_defaults.get(algo.value, {}) if entry else {}
            try:
                rl_params = RL_PARAMS[algo.value].model_validate({**defaults, **spec.rl_config})
            except ValidationError as err:
                errors.extend(_convert(err, RL_PARAMS[algo.value], prefix=("rl_config",)))

    manifests = []
    if check_datasets:
        from felix_train.data.registry import check_datasets as _check

        owner = spec.engine.dataset_owner
        if entry is not None:
            manifests, ds_errors = _check([d.name for d in spec.datasets], entry.family, algo, home=home, owner=owner)
            errors.extend(ds_errors)
            if spec.engine.eval.dataset:
                _, ev_errors = _check([spec.engine.eval.dataset], entry.family, algo, home=home, owner=owner)
                errors.extend(ErrorItem(("engine", "eval", "dataset"), e.msg, e.type) for e in ev_errors)

    batch_size = spec.engine.batch_size or (entry.default_batch_size if entry else 8)
    if isinstance(rl_params, GRPOParams):
        from felix_train.rewards import parse_reward_type, validate_rewards

        for loc, msg in grpo_batch_errors(rl_params, per_device_batch_size=batch_size,
                                          gradient_accumulation_steps=spec.engine.gradient_accumulation_steps,
                                          num_processes=spec.engine.distributed.num_processes):
            errors.append(ErrorItem(loc, msg, "batch_not_divisible"))
        columns = None
        if manifests and all(getattr(m, "columns", None) for m in manifests):
            columns = set.intersection(*(set(m.columns) for m in manifests))
        try:
            reward_specs = parse_reward_type(rl_params.reward_type)
        except ValueError as err:
            for suffix, msg, typ in getattr(err, "errors", None) or [((), str(err), "reward_type_invalid")]:
                errors.append(ErrorItem(("rl_config", "reward_type", *suffix), msg, typ))
        else:
            for suffix, msg, typ in validate_rewards(reward_specs, columns):
                errors.append(ErrorItem(("rl_config", "reward_type", *suffix), msg, typ))

    if entry is None and not errors:  # every path that leaves no entry has said why; never resolve without one
        errors.append(ErrorItem(("base_model",), f"no catalog model for {spec.base_model!r}", "unknown_base_model"))
    if errors:
        raise SpecError(errors)

    # resolve: fill defaults from the catalog
    updates: dict[str, Any] = {
        "name": spec.name or generate_name(entry.id, algo.value),
        "num_epochs": spec.num_epochs or entry.default_num_epochs,
        "learning_rate": spec.learning_rate or entry.default_learning_rate[spec.training_type],
    }
    if rl_params is not None:
        updates["rl_config"] = rl_params.model_dump(mode="json")
    engine = spec.engine.model_copy(update={
        "batch_size": batch_size,
        "max_length": spec.engine.max_length or entry.default_max_length,
        "lora": spec.engine.lora.model_copy(update={
            "alpha": spec.engine.lora.alpha or 2 * spec.engine.lora.r,
            "target_modules": spec.engine.lora.target_modules or entry.lora_target_modules,
        }),
        "span_loss": SpanLossSpec(**{**entry.default_span_loss, **spec.engine.span_loss.model_dump(exclude_unset=True)}),
    })
    updates["engine"] = engine
    resolved = spec.model_copy(update=updates)
    object.__setattr__(resolved, "_meta", {"catalog_model": entry.id})
    return resolved


def _rl_verified() -> list[BaseModelEntry]:
    from felix_train.catalog import CATALOG

    return [e for e in CATALOG if e.rl_verified]


def load_spec(path_or_data: str | os.PathLike | dict, *, home: str | os.PathLike | None = None,
              check_datasets: bool = True) -> JobSpec:
    """Load (YAML/JSON file or dict) and validate a spec; the resolved spec or SpecError."""
    data = path_or_data if isinstance(path_or_data, dict) else load_spec_file(path_or_data)
    return validate_spec(data, home=home, check_datasets=check_datasets)


def spec_from_json(data: dict) -> JobSpec:
    """Rebuild a resolved spec from `spec.json` (no re-validation of datasets)."""
    data = dict(data)
    catalog_model = data.pop("catalog_model", None)
    spec = JobSpec.model_validate(data)
    object.__setattr__(spec, "_meta", {"catalog_model": catalog_model or spec.base_model})
    return spec
