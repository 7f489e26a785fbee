"""LoRA DPO of decoder LLMs with TRL's `DPOTrainer` (`training_algorithm: dpo`).

Reads top to bottom like a recipe:

1. `rl_config` is already valid: `felix_train.rl_config.DPOParams` refuses at validation what TRL 1.16 would
   only refuse once training starts (exo_pair without label smoothing, WPO weighting with the aot losses).
2. `_setup_data`: every dataset's preference pairs (`prompt`/`chosen`/`rejected`, text or conversational;
   an implicit prompt is extracted from whole conversations), each with its dataset name and line; the eval
   pairs are `engine.eval.dataset` or a seeded `engine.eval.fraction` split.
3. The model: the base plus a new LoRA adapter (or a checkpoint UUID's adapter, continued). No second model
   is loaded: `ref_model=None` with a PEFT model makes TRL compute the reference log-probs with the adapter
   disabled (for a continued adapter, with a frozen copy of it, so the reference is where the job started).
4. `DPOTrainer` with `training_arguments(ctx, DPOConfig, ...)` plus every `rl_config` key, hooked by
   `FelixCallback`. The sequence limit is the smaller of `rl_config.max_length` and `engine.max_length`;
   `engine.length_policy` decides what happens to pairs over it, measured on TRL's own tokenization
   (`error` lists them, `truncate` lets TRL cut them by `truncation_mode`, `drop` leaves them out). A batch whose
   longest pairs would not fit in memory is split into equal micro-batches (`lm_memory.fit_in_memory`).
5. The adapter, tokenizer and chat template into `model/` (and the merged model into `model/merged/`);
   final metrics: eval preference accuracy, reward margin, chosen/rejected rewards, losses, runtime, and
   tokens/s and MFU (`lm_perf`: the policy's training FLOPs plus the reference forward, per chosen and
   rejected token).

One greedy generation for a fixed eval prompt is logged before and after training (the one after on every rank
when the model is sharded: FSDP, DeepSpeed ZeRO-3).
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import DPOConfig, DPOTrainer
from trl.data_utils import extract_prompt

from felix_train.errors import DatasetError, ErrorItem
from felix_train.rl_config import DPOParams
from felix_train.spec import LengthPolicy
from felix_train.trainers.context import ResolvedDataset, TrainContext, TrainResult
from felix_train.trainers.fast_dropout import use_fast_cpu_dropout
from felix_train.trainers.hf_bridge import FelixCallback, run_train_loss, tracker_callbacks, train, training_arguments
from felix_train.trainers.lm_common import (
    LengthReport,
    complete,
    eval_split,
    final_eval,
    generate_greedy,
    length_error,
    load_tokenizer,
    log_trainable,
    numeric,
    read_records,
    sample_trained,
    setup_lora_model,
    stopped_result,
    to_dataset,
)
from felix_train.trainers.lm_memory import fit_in_memory
from felix_train.trainers.lm_perf import configure_threads, mean_length, perf_metrics, setup_throughput
from felix_train.trainers.lm_speed import GroupedLabelledMixin

REWARD_KEYS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
"""TRL's preference metrics, logged per training window and (with an `eval_` prefix) per evaluation."""

def sequence_limit(ctx: TrainContext, rl: DPOParams) -> int:
    """Tokens of prompt + completion: the smaller of `rl_config.max_length` and `engine.max_length`."""
    engine_limit = ctx.spec.engine.max_length
    return engine_limit if rl.max_length is None else min(rl.max_length, engine_limit)


# -- 2. data -------------------------------------------------------------------------------------------------------

def _pairs(ds: ResolvedDataset) -> list[dict]:
    """A dataset's pairs as `{prompt, chosen, rejected, source, line}` (implicit prompts extracted)."""
    rows = []
    for line, record in read_records(ds):
        pair = {k: record[k] for k in ("prompt", "chosen", "rejected") if k in record}
        if "prompt" not in pair:
            pair = extract_prompt(pair)
        rows.append({**pair, "source": ds.name, "line": line})
    return rows


def _check_one_kind(rows: list[dict], what: str) -> None:
    """Text and conversational pairs cannot share a job (TRL templates one kind); name where each kind is."""
    kinds: dict[bool, list[dict]] = {True: [], False: []}
    for row in rows:
        kinds[isinstance(row["chosen"], list)].append(row)
    if kinds[True] and kinds[False]:
        def where(rs):
            return ", ".join(f"{r['source']} line {r['line']}" for r in rs[:3]) + (" ..." if len(rs) > 3 else "")

        raise DatasetError(
            f"the {what} pairs mix text ({len(kinds[False])}: {where(kinds[False])}) and conversational "
            f"({len(kinds[True])}: {where(kinds[True])}) records; DPO trains on one kind: convert the text pairs "
            "to messages (or the reverse), or train on the datasets in separate jobs")


def _setup_data(ctx: TrainContext) -> tuple[Dataset, Dataset | None]:
    """(train, eval or None) raw pair Datasets with `source` and `line` columns."""
    engine = ctx.spec.engine
    rows = [row for ds in ctx.train_data for row in _pairs(ds)]
    eval_rows = _pairs(ctx.eval_data) if ctx.eval_data is not None else []
    _check_one_kind(rows + eval_rows, "training and eval" if eval_rows else "training")
    train_ds = to_dataset(rows, "training")
    if ctx.eval_data is not None:
        return train_ds, to_dataset(eval_rows, "eval")
    return eval_split(train_ds, engine.eval.fraction, engine.seed)


def _apply_length_policy(ctx: TrainContext, raw: Dataset, tokenized: Dataset, *, limit: int, what: str,
                         report: LengthReport) -> Dataset:
    """`engine.length_policy` on pairs longer than `limit` tokens, measured on TRL's tokenization.

    TRL has already left out the pairs whose prompt alone fills `limit` (`keep_start`): they count as too long.

    Raises:
        DatasetError: policy `error` and some pairs are too long (every one listed: dataset, line, length).
    """
    policy = ctx.spec.engine.length_policy
    kept_keys = set(zip(tokenized["source"], tokenized["line"]))
    # (source, line, message, left out by TRL already)
    too_long: list[tuple[str, int, str, bool]] = [
        (s, n, f"{s} line {n}: its prompt alone fills the DPO max_length {limit}", True)
        for s, n in zip(raw["source"], raw["line"]) if (s, n) not in kept_keys]
    sources = tokenized["source"]
    over: list[int] = []
    for i, (source, line, p, c, r) in enumerate(zip(sources, tokenized["line"], tokenized["prompt_ids"],
                                                    tokenized["chosen_ids"], tokenized["rejected_ids"])):
        length = len(p) + max(len(c), len(r))
        if length > limit:
            over.append(i)
            too_long.append((source, line, f"{source} line {line}: {length} tokens > the DPO max_length {limit}",
                             False))
    for source in sources:
        report.add(report.kept, source)
    if not too_long:
        return tokenized
    too_long.sort(key=lambda t: (t[0], t[1]))
    if policy == LengthPolicy.ERROR:
        errors = [ErrorItem(("datasets", s, n), msg, "record_too_long") for s, n, msg, _ in too_long]
        raise length_error(
            f"{len(errors)} {what} pair(s) are longer than the DPO max_length ({limit} tokens, the smaller of "
            "rl_config.max_length and engine.max_length)", errors,
            "Raise `rl_config.max_length` and `engine.max_length`, shorten or remove these pairs, or set "
            "`engine.length_policy: truncate` (cut them, by `rl_config.truncation_mode`) or `drop` (leave them out).")
    for source, _, _, by_trl in too_long:
        if by_trl:  # nothing of its completions would be left
            report.add(report.dropped, source)
    if policy == LengthPolicy.DROP:
        for i in over:
            report.add(report.dropped, sources[i])
            report.kept[sources[i]] -= 1
        gone = set(over)
        return tokenized.select([i for i in range(len(tokenized)) if i not in gone])
    for i in over:  # truncate: the collator cuts them
        report.add(report.truncated, sources[i])
    return tokenized


def _fit_lengths(ctx: TrainContext, trainer: DPOTrainer, raw_train: Dataset, raw_eval: Dataset | None,
                 limit: int) -> LengthReport:
    """Apply the length policy to the trainer's tokenized train and eval pairs; log and return what it did."""
    report, eval_report = LengthReport(), LengthReport()
    trainer.train_dataset = _apply_length_policy(ctx, raw_train, trainer.train_dataset, limit=limit,
                                                 what="training", report=report)
    policy = ctx.spec.engine.length_policy.value
    if len(trainer.train_dataset) == 0:
        raise DatasetError(f"no training pair is left after `engine.length_policy: {policy}` (DPO max_length "
                           f"{limit}); raise `rl_config.max_length` and `engine.max_length`")
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = _apply_length_policy(ctx, raw_eval, trainer.eval_dataset, limit=limit, what="eval",
                                                    report=eval_report)
        if len(trainer.eval_dataset) == 0:
            trainer.eval_dataset = None
            trainer.args.eval_strategy = "no"
    for name in dict.fromkeys(ds.name for ds in ctx.train_data):
        note = [f"{n} {what}" for what, n in (("truncated", report.truncated.get(name)),
                                              ("dropped", report.dropped.get(name))) if n]
        extra = f" ({', '.join(note)} at max_length {limit})" if note else ""
        ctx.reporter.log(f"dataset {name}: {report.kept.get(name, 0)} pairs for training{extra}")
    if trainer.eval_dataset is not None:
        source = ctx.eval_data.name if ctx.eval_data is not None else f"{ctx.spec.engine.eval.fraction:g} of the pairs"
        note = (f" ({eval_report.num_truncated} truncated, {eval_report.num_dropped} dropped)"
                if eval_report.num_truncated or eval_report.num_dropped else "")
        ctx.reporter.log(f"eval: {len(trainer.eval_dataset)} pairs from {source}{note}")
    report.merge(eval_report)
    ctx.reporter.warn_lengths(truncated=report.truncated, dropped=report.dropped, max_length=limit, policy=policy,
                              unit="pairs")
    return report


def pair_length(tokenized: Dataset, limit: int) -> float:
    """The mean length (≤ `limit`) of the chosen and the rejected sequences (prompt + completion) of the pairs."""
    lengths = [min(len(p) + len(c), limit) for p, c, r in zip(tokenized["prompt_ids"], tokenized["chosen_ids"],
                                                             tokenized["rejected_ids"]) for c in (c, r)]
    return mean_length(lengths)


# -- 3./4. trainer -------------------------------------------------------------------------------------------------

class _DPOTrainer(GroupedLabelledMixin, DPOTrainer):
    """TRL's DPOTrainer with batches of pairs of similar length when `group_by_length_seed` is set, and the LM
    head scored on completion tokens only when `score_labelled_only` is set (CPU), for the policy and the
    reference forward alike (`lm_speed`). The same pairs per epoch and the same loss as TRL's random batches."""

    def row_lengths(self, dataset) -> list[int] | None:
        if "chosen_ids" not in dataset.column_names:
            return None
        # a pair's batch row is padded to the longer of its two sequences
        return [len(p) + max(len(c), len(r)) for p, c, r in
                zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]


def build_trainer(ctx: TrainContext, model, peft_config, tokenizer, train_ds: Dataset, eval_ds: Dataset | None,
                  callback: FelixCallback) -> DPOTrainer:
    """The DPOTrainer for a job: DPOConfig = the shared TrainingArguments + every `rl_config` key.

    `engine.packing: auto` (the default) batches pairs of similar length; `false` keeps TRL's random order. On
    CPU the LM head is scored on completion tokens only and LoRA dropout draws from a fast generator (`fast_dropout`).
    """
    rl: DPOParams = ctx.spec.rl()
    args = training_arguments(
        ctx, DPOConfig, has_eval=eval_ds is not None,
        beta=rl.beta,
        loss_type=list(rl.loss_type) if isinstance(rl.loss_type, list) else [rl.loss_type],
        loss_weights=rl.loss_weights,
        label_smoothing=rl.label_smoothing,
        max_length=sequence_limit(ctx, rl),
        truncation_mode=rl.truncation_mode,
        precompute_ref_log_probs=rl.precompute_ref_log_probs,
        use_weighting=rl.use_weighting,
        padding_free=rl.padding_free,
        disable_dropout=rl.disable_dropout,
        dataset_num_proc=None,
    )
    trainer = _DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[callback, *tracker_callbacks(ctx)])
    if ctx.spec.engine.packing is not False:
        trainer.group_by_length_seed = ctx.spec.engine.seed
    if ctx.device == "cpu":
        trainer.score_labelled_only = True
        use_fast_cpu_dropout(trainer.model)
    return trainer


# -- 5. results ----------------------------------------------------------------------------------------------------

def _final_metrics(ctx: TrainContext, trainer: DPOTrainer, output, callback: FelixCallback,
                   report: LengthReport) -> dict[str, Any]:
    state = trainer.state
    metrics: dict[str, Any] = {}
    train_loss = run_train_loss(ctx, state.global_step)
    metrics["train_loss"] = train_loss if train_loss is not None else output.training_loss
    evals = numeric(callback.eval_metrics)
    for key in ("eval_loss", *(f"eval_{k}" for k in REWARD_KEYS)):
        if key in evals:
            metrics[key] = evals[key]
    train_logs = numeric(callback.train_logs)
    for key in REWARD_KEYS:  # the last training window
        if key in train_logs:
            metrics[key] = train_logs[key]
    metrics["num_tokens"] = int(state.num_input_tokens_seen or 0)
    if callback.tokens_per_s is not None:
        metrics["tokens_per_s"] = round(callback.tokens_per_s, 1)
    metrics["train_runtime_s"] = round(float(output.metrics.get("train_runtime", 0.0)), 2)
    metrics["steps"] = state.global_step
    metrics["epochs"] = round(float(state.epoch or 0), 4)
    metrics["num_train_records"] = len(trainer.train_dataset)
    metrics["num_eval_records"] = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    metrics["num_truncated"] = report.num_truncated
    metrics["num_dropped"] = report.num_dropped
    metrics["records_per_dataset"] = {name: report.kept.get(name, 0) for name in dict.fromkeys(
        ds.name for ds in ctx.train_data)}
    metrics.update(perf_metrics(callback))
    return metrics


def run(ctx: TrainContext) -> TrainResult:
    """Train a LoRA adapter with DPO; see the module docstring for the steps."""
    rl: DPOParams = ctx.spec.rl()
    limit = sequence_limit(ctx, rl)
    if rl.padding_free:
        ctx.reporter.log("rl_config.padding_free: TRL 1.16 has padding-free DPO temporarily disabled; "
                         "training with padding", level="WARN")

    configure_threads(ctx)
    tokenizer = load_tokenizer(ctx)
    raw_train, raw_eval = _setup_data(ctx)
    model, peft_config = setup_lora_model(ctx)
    callback = FelixCallback(ctx)
    trainer = build_trainer(ctx, model, peft_config, tokenizer, raw_train, raw_eval, callback)

    report = _fit_lengths(ctx, trainer, raw_train, raw_eval, limit)
    fit_in_memory(ctx, trainer, [min(n, limit) for n in trainer.row_lengths(trainer.train_dataset)])
    eval_ds = trainer.eval_dataset
    kind = "conversational" if isinstance(raw_train[0]["chosen"], list) else "text"
    losses = rl.loss_type if isinstance(rl.loss_type, list) else [rl.loss_type]
    reference = ("continued adapter, frozen" if ctx.model.init_checkpoint is not None
                 else "base model (adapter disabled)")
    ctx.reporter.log(f"DPO: {len(trainer.train_dataset)} train / {len(eval_ds) if eval_ds is not None else 0} eval "
                     f"{kind} pairs, max_length {limit} ({ctx.spec.engine.length_policy.value}), beta {rl.beta}, "
                     f"loss {'+'.join(losses)}; reference = the {reference}")
    log_trainable(ctx, trainer)
    setup_throughput(ctx, trainer, callback, algorithm="dpo", seq_len=pair_length(trainer.train_dataset, limit),
                     reference_forward=not rl.precompute_ref_log_probs)

    probe = (eval_ds if eval_ds is not None else trainer.train_dataset)[0]["prompt_ids"]
    # before training the model is not sharded yet (HF prepares FSDP/DeepSpeed in `train()`): rank 0 alone samples
    # it, never in step with ranks that are not generating (`synced_gpus=False`, which transformers would otherwise
    # turn on by itself once the DPOConfig has enabled ZeRO-3)
    if ctx.resume_from is None and ctx.is_main_process:
        ctx.reporter.log(f"generation before training: {tokenizer.decode(probe)!r} -> "
                         f"{generate_greedy(trainer.model, tokenizer, probe, synced_gpus=False)!r}")
    output = train(trainer, ctx, callback)

    if (stopped := stopped_result(ctx, callback)) is not None:
        return stopped

    final_eval(ctx, callback, trainer)
    after = sample_trained(ctx, trainer, tokenizer, probe)  # every rank: a sharded model generates on all of them
    if after is not None:
        ctx.reporter.log(f"generation after training: {tokenizer.decode(probe)!r} -> {after!r}")
    return complete(ctx, trainer, tokenizer, callback, _final_metrics(ctx, trainer, output, callback, report))
