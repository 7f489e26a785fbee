"""LoRA supervised fine-tuning of decoder LLMs with TRL's `SFTTrainer` (`training_algorithm: sft`).

Reads top to bottom like a recipe (the data and the chat template have their own modules):

1. `lm_perf.configure_threads`: intra-op threads on the CPUs this process may use (affinity mask and cgroup
   quota, shared between the jobs and ranks of a node) unless `OMP_NUM_THREADS` is set; the policy in the log.
2. `sft_template.setup_tokenizer`: the base tokenizer, with a chat template that has `{% generation %}`
   markers (kept, patched by TRL, or ChatML-with-markers for ChatML models), so assistant-only loss is exact.
3. `sft_data.setup_data`: every dataset's JSONL tokenized the way TRL 1.16's `SFTTrainer` does, labels `-100`
   outside the trained span, once per dataset content, tokenizer and masking (cached under
   `$FELIX_HOME/cache/sft-tokens/`); a seeded eval split; the length policy (`error` lists the offending
   dataset lines, `truncate` and `drop` are counted). Formats (`messages`, `prompt_completion` text or
   conversational, `text`) may be mixed in one job.
4. `setup_lora_model` (shared with DPO/GRPO in `lm_common`): the base model plus a new LoRA adapter, or the
   adapter of a checkpoint UUID, continued.
5. `SFTTrainer` on the pre-tokenized data, hooked by `FelixCallback`, batched as `choose_batching` says:
   `engine.packing: true` packs with TRL's `bfd`; `auto` (the default) is padding-free where attention has
   variable-length kernels (flash attention) and otherwise pads batches of similar lengths
   (`LengthGroupedEpochSampler`: exact, resume-safe); `false` pads batches in random order, exactly like
   a plain TRL script (`tests/trainers/test_parity.py`). On CPU the LM head is projected on labelled
   positions only, and (except under `packing: false`) LoRA dropout draws its masks from a fast generator
   (`fast_dropout`: torch's `bernoulli_` was 11 % of a SmolLM2 step). A batch whose longest rows would not fit in
   memory is split into equal micro-batches (`lm_memory.fit_in_memory`: the same optimizer steps).
6. The adapter, tokenizer and chat template into `model/` (and the merged model into `model/merged/`),
   through `lm_common.complete`; the final metrics carry tokens/s and MFU (`lm_perf`).

One greedy generation for a fixed prompt (from the data) is logged before and after training; for a new
adapter the "before" one is the base model's, sampled after training with the adapter disabled, so it
costs nothing on the way to the first step. Samples taken after training run on every rank when the model
is sharded (FSDP, DeepSpeed ZeRO-3), whose forward needs them all (`lm_common.sample_trained`).
Python's collector is frozen over the run (`_frozen_heap`).
"""

from __future__ import annotations

import contextlib
import gc
import math
from enum import Enum
from typing import Any

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from felix_train.trainers.context import TrainContext, TrainResult
from felix_train.trainers.fast_dropout import use_fast_cpu_dropout
from felix_train.trainers.hf_bridge import FelixCallback, run_train_loss, tracker_callbacks, train, training_arguments
from felix_train.trainers.lm_common import (
    LengthReport,
    complete,
    final_eval,
    generate_greedy,
    log_trainable,
    sample_trained,
    setup_lora_model,
    stopped_result,
)
from felix_train.trainers.lm_speed import (  # noqa: F401 - LengthGroupedEpochSampler re-exported
    GroupedLabelledMixin,
    LengthGroupedEpochSampler,
)
from felix_train.trainers.lm_memory import fit_in_memory
from felix_train.trainers.lm_perf import configure_threads, mean_length, perf_metrics, setup_throughput
from felix_train.trainers.sft_data import (  # noqa: F401 - re-exported: `felix_train.trainers.sft.<name>` keeps working
    TOKEN_CACHE_DIRNAME,
    TOKEN_CACHE_VERSION,
    apply_length_policy,
    generation_prompt,
    setup_data,
    token_cache_path,
    tokenize_dataset,
    tokenize_record,
    tokenizer_fingerprint,
    too_long_errors,
)
from felix_train.trainers.sft_template import setup_tokenizer, training_chat_template  # noqa: F401 - re-exported

_setup_tokenizer = setup_tokenizer  # the names the tests (and older callers) use
_setup_data = setup_data


# -- 3. trainer ------------------------------------------------------------------------------------------------

class Batching(str, Enum):
    """How training batches are formed, from `engine.packing` and the model's attention implementation."""

    PACKED = "packed"  # packing: true. TRL's bfd packing: rows of max_length tokens, per-document attention
    PADDING_FREE = "padding_free"  # auto, flash attention: a batch is one unpadded row, per-example attention
    GROUPED = "grouped"  # auto, elsewhere: padded batches of similar lengths (exact, resume-safe sampler)
    PADDED = "padded"  # packing: false. Padded batches in random order (TRL's default)


BATCHING_LOG = {
    Batching.PACKED: "packed (bfd)",
    Batching.PADDING_FREE: "padding-free (each batch one unpadded row, per-example attention)",
    Batching.GROUPED: "padded, length-grouped batches",
    Batching.PADDED: "padded",
}


def choose_batching(packing: bool | str, attn_implementation: str | None) -> Batching:
    """`packing: auto` is padding-free where attention has variable-length kernels (flash attention), so a
    batch costs its real tokens only; elsewhere (SDPA, eager, CPU) a padding-free row needs one block-diagonal
    mask over the whole batch, quadratic in its total length, so auto pads batches of similar lengths instead.
    Both keep the examples, their order and the loss of `packing: false`.
    """
    if packing is True:
        return Batching.PACKED
    if packing is False:
        return Batching.PADDED
    if attn_implementation and attn_implementation.startswith("flash_attention"):
        return Batching.PADDING_FREE
    return Batching.GROUPED


def attention_of(model) -> str | None:
    """The attention implementation `model` was loaded with (`lm_common.model_load_kwargs`: flash attention on a
    GPU with `flash-attn`, else transformers' default), read through a PEFT wrapper too; None if it has no config."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


class _SFTTrainer(GroupedLabelledMixin, SFTTrainer):
    """TRL's SFTTrainer, with the epoch-seeded length-grouped sampler when `group_by_length_seed` is set,
    and the LM head scored on labelled positions only when `score_labelled_only` is set (CPU)."""

    batching: Batching | None = None

    def row_lengths(self, dataset) -> list[int] | None:
        # HF passes the dataset with its unused columns (our `length`) already removed: measure input_ids
        return [len(ids) for ids in dataset["input_ids"]] if "input_ids" in dataset.column_names else None


def build_trainer(ctx: TrainContext, model, peft_config, tokenizer, train_ds: Dataset, eval_ds: Dataset | None,
                  callback: FelixCallback) -> _SFTTrainer:
    """The SFTTrainer for a job, on pre-tokenized data (masks in `labels`, the length policy applied).

    TRL packs the data (`Batching.PACKED`) or takes it as is (`skip_prepare_dataset`: its truncation
    and fully-masked filter are no-ops on data the length policy has seen), batched as `choose_batching` says.
    """
    engine = ctx.spec.engine
    mode = choose_batching(engine.packing, attention_of(model))
    packing = mode == Batching.PACKED
    args = training_arguments(
        ctx, SFTConfig, has_eval=eval_ds is not None,
        # padding-free without packing: TRL leaves max_length to the data (already within it)
        max_length=None if mode == Batching.PADDING_FREE else engine.max_length,
        packing=packing,
        packing_strategy="bfd",
        eval_packing=packing,
        padding_free=mode == Batching.PADDING_FREE,
        dataset_kwargs=None if packing else {"skip_prepare_dataset": True},
        assistant_only_loss=False,  # the masks are in `labels` already (see tokenize_record)
        completion_only_loss=None,
        dataset_num_proc=None,
    )
    trainer = _SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[callback, *tracker_callbacks(ctx)])
    if mode == Batching.GROUPED:
        trainer.group_by_length_seed = engine.seed
    trainer.score_labelled_only = ctx.device == "cpu"
    trainer.batching = mode
    if ctx.device == "cpu" and mode != Batching.PADDED:  # `packing: false` keeps the plain TRL script's draws
        use_fast_cpu_dropout(trainer.model)
    return trainer


# -- 4. run and export ---------------------------------------------------------------------------------------------

def _final_metrics(ctx: TrainContext, trainer, output, callback: FelixCallback, report: LengthReport,
                   train_ds: Dataset, eval_ds: Dataset | None) -> dict[str, Any]:
    state = trainer.state
    metrics: dict[str, Any] = {}
    train_loss = run_train_loss(ctx, state.global_step)
    metrics["train_loss"] = train_loss if train_loss is not None else output.training_loss
    eval_loss = callback.eval_metrics.get("eval_loss")
    if eval_loss is not None:
        metrics["eval_loss"] = eval_loss
        metrics["perplexity"] = math.exp(eval_loss) if eval_loss < 700 else float("inf")
    accuracy = callback.eval_metrics.get("eval_mean_token_accuracy", callback.train_logs.get("mean_token_accuracy"))
    if accuracy is not None:
        metrics["mean_token_accuracy"] = accuracy
    metrics["num_tokens"] = int(state.num_input_tokens_seen or 0)
    if callback.tokens_per_s is not None:
        metrics["tokens_per_s"] = round(callback.tokens_per_s, 1)
    metrics["train_runtime_s"] = round(float(output.metrics.get("train_runtime", 0.0)), 2)
    metrics["steps"] = state.global_step
    metrics["epochs"] = round(float(state.epoch or 0), 4)
    metrics["num_train_records"] = len(train_ds)
    metrics["num_eval_records"] = len(eval_ds) if eval_ds is not None else 0
    metrics["num_truncated"] = report.num_truncated
    metrics["num_dropped"] = report.num_dropped
    metrics["records_per_dataset"] = {ds.name: report.kept.get(ds.name, 0) for ds in ctx.train_data}
    metrics.update(perf_metrics(callback))
    return metrics


@contextlib.contextmanager
def _frozen_heap():
    """`gc.freeze()` for the run: the ~0.5M objects of torch, transformers and TRL leave the collector's view,
    so the full collections HF's Trainer triggers (and the ones allocation triggers) scan only the run's own
    objects. `gc.unfreeze()` after, so a process that runs several jobs collects their garbage as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run(ctx: TrainContext) -> TrainResult:
    """Train a LoRA adapter with SFT; see the module docstring for the steps."""
    with _frozen_heap():
        return _run(ctx)


def _run(ctx: TrainContext) -> TrainResult:
    engine = ctx.spec.engine
    configure_threads(ctx)
    completion_only = engine.completion_only_loss
    # only `messages` need the template's generation markers; prompt/completion masks come from the prompt's length
    datasets = ctx.train_data + ([ctx.eval_data] if ctx.eval_data is not None else [])
    has_messages = any(ds.format == "messages" for ds in datasets)
    tokenizer = setup_tokenizer(ctx, needs_markers=completion_only and has_messages)
    train_ds, eval_ds, report = setup_data(ctx, tokenizer, completion_only=completion_only)

    model, peft_config = setup_lora_model(ctx)
    prompt_ids = generation_prompt(eval_ds if eval_ds is not None else train_ds)
    callback = FelixCallback(ctx)
    trainer = build_trainer(ctx, model, peft_config, tokenizer, train_ds, eval_ds, callback)
    fit_in_memory(ctx, trainer, [len(ids) for ids in trainer.train_dataset["input_ids"]])
    # A new adapter starts as the base model: its "before" sample is the base's, taken after training with the
    # adapter disabled, off the start-up path. A continued adapter is sampled now, before it changes (on the GPU the
    # trainer has moved it to), by rank 0 alone: HF shards a model in `train()` only (and under FSDP's
    # cpu_ram_efficient_loading the other ranks hold no weights yet); `synced_gpus` stays off.
    if peft_config is None and ctx.resume_from is None and ctx.is_main_process:
        ctx.reporter.log(f"generation before training: {tokenizer.decode(prompt_ids)!r} -> "
                         f"{generate_greedy(trainer.model, tokenizer, prompt_ids, synced_gpus=False)!r}")
    ctx.reporter.log(f"SFT: {len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval records, "
                     f"max_length {engine.max_length}, {BATCHING_LOG[trainer.batching]}, loss on "
                     f"{'assistant turns / completions only' if completion_only else 'whole sequences'}")
    log_trainable(ctx, trainer)
    setup_throughput(ctx, trainer, callback, algorithm="sft", seq_len=mean_length(map(len, train_ds["input_ids"])))
    output = train(trainer, ctx, callback)

    if (stopped := stopped_result(ctx, callback)) is not None:
        return stopped

    final_eval(ctx, callback, trainer)
    # every rank calls these: a sharded model (FSDP, ZeRO-3) generates on all ranks together; rank 0 gets the text
    if peft_config is not None:
        before = sample_trained(ctx, trainer, tokenizer, prompt_ids, adapter_disabled=True)
        if before is not None:
            ctx.reporter.log(f"generation before training: {tokenizer.decode(prompt_ids)!r} -> {before!r} "
                             "(the base model: sampled with the adapter disabled)")
    after = sample_trained(ctx, trainer, tokenizer, prompt_ids)
    if after is not None:
        ctx.reporter.log(f"generation after training: {tokenizer.decode(prompt_ids)!r} -> {after!r}")
    return complete(ctx, trainer, tokenizer, callback,
                    _final_metrics(ctx, trainer, output, callback, report, train_ds, eval_ds))
