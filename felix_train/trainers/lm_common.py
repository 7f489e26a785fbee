"""Pieces every decoder-LLM trainer (SFT, DPO, GRPO) shares: tokenizer, LoRA model, data, final model, metrics.

- `load_tokenizer(ctx)`: the base tokenizer with a pad token.
- `setup_lora_model(ctx)`: the base model plus a new `LoraConfig` from `engine.lora`, or, when `base_model`
  is a checkpoint UUID, that checkpoint's adapter loaded trainable (the job continues it). Loaded as
  `model_load_kwargs(ctx)` says: fp32 unless the job trains in bf16 (`hf_args.job_precision`), then the frozen
  base in bf16 (the LoRA adapter stays fp32); flash attention on a GPU when `flash-attn` is installed.
- `read_records(ds)` / `to_dataset(...)` / `eval_split(...)`: JSONL records with their line number (read by
  `felix_train.jsonl`; a bad line is a DatasetError naming dataset and line, and a refused record can be named),
  and the seeded held-out split of `engine.eval.fraction`.
- `LengthReport` / `length_error(...)`: what `engine.length_policy` did, and the `error` policy's DatasetError
  listing every offending dataset line.
- `generate_greedy(...)`: one greedy completion, for the before/after samples in train.log;
  `sample_trained(...)` the same with the trainer's model after training, on every rank when the model is
  sharded (FSDP, DeepSpeed ZeRO-3: a forward needs every rank), written by rank 0.
- `save_final_model(ctx, trainer, tokenizer)`: `model/` (adapter + tokenizer + chat template) and, with
  `engine.export.merged`, `model/merged/`; written aside, then swapped into place (`felix_train.jobs.replace_dir`).
- `logged_mean(ctx, key, final_step)`: a logged metric averaged over the whole job (every attempt).
- `record_final_eval(ctx, callback, trainer)`: the last eval's metrics into the last checkpoint's manifest.
- The ending every HF trainer shares: `stopped_result` (stop/preemption), `final_eval` (an eval at the last step,
  into its manifest), `complete` (`model/`, the scratch folder removed, the `complete` result).

Imports torch and transformers at module import: load it only inside a trainer's `run()`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from felix_train.errors import DatasetError, ErrorItem
from felix_train.jobs import replace_dir  # noqa: F401 - the one directory swap; `lm_common.replace_dir` kept importable
from felix_train.jsonl import JSONLError, read_jsonl
from felix_train.models.causal_lm import PAD_TOKEN
from felix_train.trainers.context import Outcome, ResolvedDataset, TrainContext, TrainResult

MAX_LISTED_LINES = 20
"""How many offending records a length error lists (its `errors` keep them all)."""
GENERATION_MAX_NEW_TOKENS = 32
REF_ADAPTER = "ref"
"""The frozen copy of a continued adapter that TRL's DPO/GRPO add as the reference (never exported)."""


# -- tokenizer and model -------------------------------------------------------------------------------------------

def load_tokenizer(ctx: TrainContext):
    """The base model's tokenizer, with a pad token (the model's `<|endoftext|>` if it has one, else EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(str(ctx.model.path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def _deepspeed_launch() -> bool:
    """Whether `accelerate launch` started this process under a DeepSpeed config (it sets the variable)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower() in ("1", "true", "yes")


def model_load_kwargs(ctx: TrainContext) -> dict[str, Any]:
    """`dtype` (and `attn_implementation` when there is one to ask for) for loading the base model.

    - fp32 on CPU, and for fp32 or fp16 training (fp16 autocast keeps fp32 weights: an fp16 frozen base would also
      run its norms and residual sums in fp16, which overflows on some models).
    - bf16 when training in bf16 (`hf_args.job_precision`: a GPU with native bf16, an AMX CPU where bf16 measures
      faster, or `precision: bf16`): the frozen base is only read, and autocast would cast every fp32 weight to
      bf16 for each matmul anyway; half the memory and no per-step casts. The LoRA adapter stays fp32 (PEFT's
      `autocast_adapter_dtype`, used by TRL's `get_peft_model` and by `PeftModel.from_pretrained`; FSDP upcasts
      trainable parameters to fp32 too), so the optimizer updates fp32 weights.
    - fp32 under DeepSpeed: its engine keeps the module in bf16 itself (fp32 master weights in the optimizer), and
      ZeRO-3 needs one dtype across base and adapter (TRL's note to `autocast_adapter_dtype=False`).
    - `attn_implementation`: `hf_args.attn_implementation` (flash attention 2 on CUDA with bf16/fp16 when
      `flash-attn` is installed); left out otherwise (transformers' default, SDPA). SFT's `choose_batching`
      reads it back from the model's config (`packing: auto` is padding-free under flash attention).
    """
    from felix_train.trainers.hf_args import attn_implementation, precision_flags

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if precision_flags(ctx)["bf16"] and not _deepspeed_launch():
        kwargs["dtype"] = torch.bfloat16
    attn = attn_implementation(ctx)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    return kwargs


def setup_lora_model(ctx: TrainContext):
    """(model, peft_config): the base and a new LoRA config, or (the checkpoint's adapter loaded trainable, None)."""
    from peft import LoraConfig, PeftModel

    load = model_load_kwargs(ctx)
    model = AutoModelForCausalLM.from_pretrained(str(ctx.model.path), **load)
    if ctx.device == "cuda" or load["dtype"] != torch.float32:
        dtype = str(load["dtype"]).removeprefix("torch.")
        ctx.reporter.log(f"base model loaded in {dtype}, attention "
                         f"{getattr(model.config, '_attn_implementation', None) or 'default'}")
    if ctx.model.init_checkpoint is not None:
        model = PeftModel.from_pretrained(model, str(ctx.model.init_checkpoint), is_trainable=True)
        cfg = model.peft_config["default"]
        name = ctx.model.init_manifest.uuid if ctx.model.init_manifest else ctx.model.init_checkpoint
        ctx.reporter.log(f"continuing the LoRA adapter of checkpoint {name} (r={cfg.r}, alpha={cfg.lora_alpha}); "
                         "engine.lora is ignored")
        return model, None
    lora = ctx.spec.engine.lora
    targets = lora.target_modules
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else list(targets),
    )
    return model, peft_config


def log_trainable(ctx: TrainContext, trainer) -> None:
    if ctx.is_main_process:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        ctx.reporter.log(f"LoRA: {trainable:,} trainable of {total:,} parameters "
                         f"({100 * trainable / max(total, 1):.2f}%)")


# -- data ----------------------------------------------------------------------------------------------------------

def read_records(ds: ResolvedDataset) -> list[tuple[int, dict]]:
    """(1-based line number, record) for every non-blank line of a dataset's JSONL (`felix_train.jsonl`).

    Raises:
        DatasetError: a line is not JSON (or not UTF-8), named by dataset and line.
    """
    try:
        return read_jsonl(ds.path)
    except JSONLError as err:
        raise DatasetError(f"dataset {ds.name} line {err.line}: {err.message}; fix the line, then register the "
                           "dataset again", [ErrorItem(("datasets", ds.name, err.line), err.message,
                                                       "jsonl_invalid")]) from err


def to_dataset(rows: list[dict], what: str) -> Dataset:
    """A `datasets.Dataset` from row dicts; a column whose values have clashing types is a DatasetError."""
    import pyarrow as pa

    try:
        return Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise DatasetError(f"the {what} records do not share one type per field ({err}); give every record's "
                           "field the same JSON type (e.g. all strings or all numbers)") from err


def eval_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, held-out) with `round(len * fraction)` records held out (at least 1, never all), seeded."""
    if fraction <= 0 or len(data) < 2:
        return data, None
    n_eval = min(max(1, round(len(data) * fraction)), len(data) - 1)
    split = data.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return split["train"], split["test"]


@dataclass
class LengthReport:
    """What the length policy did to one split, per dataset name."""

    truncated: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def num_truncated(self) -> int:
        return sum(self.truncated.values())

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @staticmethod
    def add(counter: dict[str, int], name: str, n: int = 1) -> None:
        counter[name] = counter.get(name, 0) + n

    def merge(self, other: LengthReport) -> None:
        """Add another split's truncated and dropped counts (`kept` stays this split's)."""
        for mine, theirs in ((self.truncated, other.truncated), (self.dropped, other.dropped)):
            for name, n in theirs.items():
                self.add(mine, name, n)


def length_error(header: str, errors: list[ErrorItem], fix: str) -> DatasetError:
    """The `length_policy: error` refusal: a header, the first `MAX_LISTED_LINES` offending lines, the fix."""
    listed = "\n".join(f"  {e.msg}" for e in errors[:MAX_LISTED_LINES])
    more = f"\n  ... and {len(errors) - MAX_LISTED_LINES} more" if len(errors) > MAX_LISTED_LINES else ""
    return DatasetError(f"{header}:\n{listed}{more}\n{fix}", errors)


@torch.no_grad()
def generate_greedy(model, tokenizer, prompt_ids: list[int], max_new_tokens: int = GENERATION_MAX_NEW_TOKENS, *,
                    synced_gpus: bool = False, device: torch.device | str | None = None) -> str:
    """The greedy completion of `prompt_ids` (special tokens kept), leaving the model in its train/eval mode.

    `synced_gpus` must be True exactly when every rank runs this call on a sharded model (each rank then keeps
    stepping until all are done); it is always passed, because transformers turns it on by itself under
    ZeRO-3, where one rank generating alone would then wait forever for the others.
    """
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    input_ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=max_new_tokens, do_sample=False, synced_gpus=synced_gpus,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if was_training:
        model.train()
    return tokenizer.decode(out[0][len(prompt_ids):], skip_special_tokens=False)


def model_is_sharded(trainer) -> bool:
    """Whether the trainer's model is sharded across ranks (FSDP, DeepSpeed ZeRO-3): a forward is then a collective."""
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None:
        return False
    from trl.distributed import DistributedBackend

    backend = DistributedBackend(accelerator)
    return backend.is_fsdp or backend.is_zero3


def sample_trained(ctx: TrainContext, trainer, tokenizer, prompt_ids: list[int], *,
                   adapter_disabled: bool = False) -> str | None:
    """The greedy completion of `prompt_ids` by the trainer's model (with its adapter disabled: the base model's),
    on rank 0; None on the other ranks. Call it on every rank.

    Unsharded (one process, DDP, ZeRO-1/2) rank 0 generates alone. Sharded (FSDP, ZeRO-3) every rank must join each
    forward, so every rank generates, in step (`synced_gpus`), through TRL's own unwrapping for generation (ZeRO-3
    parameters gathered layer by layer as the forward reaches them, FSDP1's root parameters summoned), and only rank
    0 keeps the text.
    """
    sharded = model_is_sharded(trainer)
    if not sharded:
        if not ctx.is_main_process:
            return None
        scope = trainer.model.disable_adapter() if adapter_disabled else contextlib.nullcontext()
        with scope:
            return generate_greedy(trainer.model, tokenizer, prompt_ids)
    from trl.distributed import DistributedBackend
    from trl.models import unwrap_model_for_generation

    backend = DistributedBackend(trainer.accelerator)
    wrapped = trainer.model_wrapped
    with (unwrap_model_for_generation(wrapped, trainer.accelerator, gather_deepspeed3_params=False) as model,
          backend.summon_full_params(wrapped, recurse=False)):
        scope = model.disable_adapter() if adapter_disabled else contextlib.nullcontext()
        with scope:
            text = generate_greedy(model, tokenizer, prompt_ids, synced_gpus=True, device=trainer.accelerator.device)
    sharding = "DeepSpeed ZeRO-3" if backend.is_zero3 else f"FSDP{backend.fsdp_version}"
    ctx.reporter.log(f"sample generated by all {trainer.accelerator.num_processes} rank(s) together "
                     f"(the model is sharded: {sharding})")
    return text if ctx.is_main_process else None


# -- final model ---------------------------------------------------------------------------------------------------

def drop_reference_adapter(model) -> None:
    """Delete TRL's frozen `ref` adapter (present when a continued adapter is trained with DPO/GRPO)."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and REF_ADAPTER in peft_config:
        model.delete_adapter(REF_ADAPTER)


def save_final_model(ctx: TrainContext, trainer, tokenizer) -> None:
    """model/: the adapter + tokenizer (+ chat template); model/merged/ when export.merged. Written aside, renamed."""
    from peft import PeftModel

    job = ctx.job
    drop_reference_adapter(trainer.model)
    tmp = job.root / f".model.{uuid.uuid4().hex[:8]}.tmp"
    trainer.save_model(str(tmp))
    if not ctx.is_main_process:
        return
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # HF's pickled arguments are no part of a downloadable model
    if ctx.spec.engine.export.merged:
        base = AutoModelForCausalLM.from_pretrained(str(ctx.model.path), dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(tmp)).merge_and_unload()
        merged.save_pretrained(str(tmp / "merged"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "merged"))
        ctx.reporter.log("merged model (LoRA folded into the base) written to model/merged/")
    replace_dir(tmp, job.model_dir)


# -- metrics -------------------------------------------------------------------------------------------------------

def logged_mean(ctx: TrainContext, key: str, final_step: int) -> float | None:
    """Mean of a logged training metric over the whole job (every attempt), from metrics.jsonl.

    Each logged value averages the steps since the previous log, so it is weighted by that many steps;
    a step logged twice (a preempted attempt ran past its last checkpoint) counts once, its last value.
    Eval rows (`eval_*` keys) are never read. None when `key` was never logged.
    """
    by_step: dict[int, float] = {}
    for row in ctx.reporter.read_metrics():
        value, step = row.get(key), row.get("step")
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(step, int)
                and 0 < step <= final_step and math.isfinite(value)):
            by_step[step] = float(value)
    if not by_step:
        return None
    total, prev = 0.0, 0
    for step in sorted(by_step):
        total += by_step[step] * (step - prev)
        prev = step
    return total / prev


def stopped_result(ctx: TrainContext, callback) -> TrainResult | None:
    """The result of a run that a stop request or a preemption ended (None when training ran to its end)."""
    if callback.stop_reason is None:
        return None
    return TrainResult(outcome=callback.outcome(), last_checkpoint=callback.last_checkpoint or ctx.checkpoints.latest())


def final_eval(ctx: TrainContext, callback, trainer) -> None:
    """Evaluate at the last step unless the run just did, and put that eval into the last checkpoint's manifest."""
    if trainer.eval_dataset is not None and callback.eval_step != trainer.state.global_step:
        trainer.evaluate()
    record_final_eval(ctx, callback, trainer)


def complete(ctx: TrainContext, trainer, tokenizer, callback, metrics: dict[str, Any]) -> TrainResult:
    """Write `model/`, drop the HF scratch folder (every checkpoint is committed by now), report `complete`."""
    from felix_train.trainers.hf_args import hf_output_dir

    metrics = {**metrics, **callback.budget_metrics(trainer.state)}  # trained_tokens; stopped_by (a budget)
    save_final_model(ctx, trainer, tokenizer)
    if ctx.is_main_process:
        shutil.rmtree(hf_output_dir(ctx), ignore_errors=True)
    return TrainResult(outcome=Outcome.COMPLETE, metrics=metrics,
                       last_checkpoint=callback.last_checkpoint or ctx.checkpoints.latest())


def record_final_eval(ctx: TrainContext, callback, trainer) -> None:
    """Merge an eval run after the last save (same step) into that checkpoint's manifest, so `best` sees it."""
    last = callback.last_checkpoint
    if last is None or callback.eval_step != trainer.state.global_step or last.step != trainer.state.global_step:
        return
    ctx.checkpoints.update_metrics(last.uuid, callback.eval_metrics)


def numeric(metrics: dict[str, Any]) -> dict[str, Any]:
    """The int/float entries of a log dict (None and strings left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
