"""The `engine:` section of a job spec: what the API leaves to the backend, as typed sub-specs.

`EngineSpec` and its parts (LoRA, eval, export, distributed launch, GLiNER2's span loss) and the enums their fields
take. `felix_train.spec` (the whole job spec and its validation) builds on it and re-exports every name here.
Light on purpose: importing this module never imports torch.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from felix_train.budgets import Duration
from felix_train.jobs import JOB_ID_PATTERN

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

    @property
    def is_gliner2(self) -> bool:
        """True when this is gliner2's own loss (nothing to replace)."""
        return self.model_dump() == SpanLossSpec().model_dump()  # the field defaults are gliner2's

    def describe(self) -> str:
        return (f"positive_weight {self.positive_weight:g}, focal_gamma {self.focal_gamma:g}, "
                f"negative_drop {self.negative_drop:g}")


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
    encoder_learning_rate: float | None = Field(None, gt=0, le=1, description="GLiNER2: the encoder's LR (its LoRA "
                                                 "adapters' under LoRA, its weights' in full training); default: the "
                                                 "catalog's `encoder_lr_ratio` × learning_rate.")
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
        "`false` = plain padding, random order. DPO: `auto`/`true` = batches of pairs of similar length, `false` = random order.")
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
    entity_free_share: float | None = Field(None, gt=0, le=1, description="GLiNER2: the most that entity-free "
                                            "training records (entity records with no mention of any label) may make up "
                                            "of an epoch; where the data holds more, each epoch trains on a new seeded "
                                            "sample of them; 1 = all of them; default from the catalog "
                                            "(`default_entity_free_share`).")
    mention_replacement: float = Field(0.0, ge=0, le=1, description="GLiNER2: each epoch, each distinct mention of a "
                                       "training record is, with this probability, replaced in the text by another "
                                       "training mention of its label (Dai & Adel 2020), so the model learns entities "
                                       "from their context; 0 = off.")
    ner_decoding: Literal["auto", "flat", "nested"] = Field("auto", description="GLiNER2 entities: `flat` keeps, "
        "among overlapping spans of any label, only the highest-scoring one (GLiNER's flat NER); `nested` keeps "
        "gliner2's label-by-label answer; `auto` = flat unless a training record has gold mentions of two labels on "
        "overlapping spans. Saved with the model (`decoding`) and used by eval, `felix-train eval` and serving.")
