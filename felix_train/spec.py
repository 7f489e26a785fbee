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
from typing import Any

from pydantic import BaseModel, Field, ValidationError

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
from felix_train.spec_engine import (  # noqa: F401 - the engine section; re-exported for `felix_train.spec.X`
    DATASET_NAME_PATTERN, REPORT_TO_PACKAGES, DistributedSpec, EngineSpec, EvalSpec, EvalSplit, ExportSpec,
    GenerationBackend, LengthPolicy, LoraSpec, ReportTo, SpanLossSpec, _Strict,
)
from felix_train.spec_files import (  # noqa: F401 - re-exported: `felix_train.spec.load_spec_file` keeps working
    ACCELERATE_CONFIG_DIR, find_accelerate_config, load_spec_file,
)
from felix_train.rl_config import RL_PARAMS, DPOParams, GRPOParams, grpo_batch_errors

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,127}$"


class DatasetRef(_Strict):
    name: str = Field(..., pattern=DATASET_NAME_PATTERN, description="Name of a dataset in the `ready` state.")


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
        (`max_time` in seconds, `max_tokens`). `encoder_learning_rate`: GLiNER2's encoder LR (the catalog's
        `encoder_lr_ratio` × learning_rate unless set) and `entity_free_share` (the catalog's
        `default_entity_free_share` unless set); null for LLMs.
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
            "precision": e.precision, "encoder_learning_rate": e.encoder_learning_rate,
            "entity_free_share": e.entity_free_share, "lora": lora,
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
    learning_rate = spec.learning_rate or entry.learning_rate(algo, spec.training_type)
    updates: dict[str, Any] = {
        "name": spec.name or generate_name(entry.id, algo.value),
        "num_epochs": spec.num_epochs or entry.default_num_epochs,
        "learning_rate": learning_rate,
    }
    if rl_params is not None:
        updates["rl_config"] = rl_params.model_dump(mode="json")
    engine = spec.engine.model_copy(update={
        "batch_size": batch_size,
        "max_length": spec.engine.max_length or entry.default_max_length,
        "encoder_learning_rate": (spec.engine.encoder_learning_rate
                                  or entry.encoder_learning_rate(spec.training_type, learning_rate)),
        "lora": spec.engine.lora.model_copy(update={
            "alpha": spec.engine.lora.alpha or 2 * spec.engine.lora.r,
            "target_modules": spec.engine.lora.target_modules or entry.lora_target_modules,
        }),
        "span_loss": SpanLossSpec(**{**entry.default_span_loss, **spec.engine.span_loss.model_dump(exclude_unset=True)}),
        "entity_free_share": (spec.engine.entity_free_share or entry.default_entity_free_share
                              if entry.family == ModelFamily.GLINER2 else None),
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
