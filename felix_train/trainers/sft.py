"""LoRA supervised fine-tuning of decoder LLMs with TRL's `SFTTrainer` (`training_algorithm: sft`).

Reads top to bottom like a recipe:

1. `_setup_tokenizer`: the base tokenizer, with a chat template that has `{% generation %}` markers
   (kept, patched by TRL, or ChatML-with-markers for ChatML models), so assistant-only loss is exact.
2. `_setup_data`: every dataset's JSONL tokenized the way TRL 1.16's `SFTTrainer` does (chat template,
   assistant / completion masks, EOS), labels `-100` outside the trained span; a seeded eval split;
   the length policy (`error` lists the offending dataset lines, `truncate` and `drop` are counted).
   Formats (`messages`, `prompt_completion` text or conversational, `text`) may be mixed in one job.
3. `setup_lora_model` (shared with DPO/GRPO in `lm_common`): the base model plus a new LoRA adapter, or the
   adapter of a checkpoint UUID, continued.
4. `SFTTrainer` on the pre-tokenized data (TRL packs it with `bfd` when `engine.packing: true`;
   `auto` keeps one example per row but batches similar lengths together), hooked by `FelixCallback`.
5. The adapter, tokenizer and chat template into `model/` (and the merged model into `model/merged/`),
   through `lm_common.save_final_model`.

One greedy generation for a fixed prompt (from the data) is logged before and after training.
"""

from __future__ import annotations

import math
import re
import shutil
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from felix_train.errors import DatasetError, ErrorItem, FelixError
from felix_train.models.causal_lm import EOS_TOKEN, chatml_template
from felix_train.spec import LengthPolicy
from felix_train.trainers.context import Outcome, ResolvedDataset, TrainContext, TrainResult
from felix_train.trainers.hf_bridge import FelixCallback, hf_output_dir, run_train_loss, train, training_arguments
from felix_train.trainers.lm_common import (
    LengthReport,
    eval_split,
    generate_greedy,
    length_error,
    load_tokenizer,
    log_trainable,
    read_records,
    record_final_eval,
    save_final_model,
    setup_lora_model,
)

_PROBES = [
    [{"role": "user", "content": "PROBE_USER_1"}, {"role": "assistant", "content": "PROBE_ASSISTANT_1"}],
    [{"role": "system", "content": "PROBE_SYSTEM"}, {"role": "user", "content": "PROBE_USER_1"},
     {"role": "assistant", "content": "PROBE_ASSISTANT_1"}, {"role": "user", "content": "PROBE_USER_2"},
     {"role": "assistant", "content": "PROBE_ASSISTANT_2"}],
]


# -- 1. tokenizer and chat template ----------------------------------------------------------------------------

def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _chatml_training_template(tokenizer) -> str | None:
    """ChatML with generation markers, if it renders exactly like the tokenizer's own template; else None."""
    original = tokenizer.chat_template
    if not isinstance(original, str) or "<|im_start|>" not in original or "<|im_end|>" not in original:
        return None
    try:
        alone = _render(tokenizer, original, _PROBES[0][:1])
    except Exception:  # noqa: BLE001 - a template that cannot render the probe is not ChatML-compatible
        return None
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n", alone, re.S)
    candidate = chatml_template(found.group(1) if found else None)
    for messages in _PROBES:
        if _render(tokenizer, original, messages) != _render(tokenizer, candidate, messages):
            return None
        if _render(tokenizer, original, messages[:-1], True) != _render(tokenizer, candidate, messages[:-1], True):
            return None
    return candidate


def training_chat_template(tokenizer, model_id: str) -> str:
    """A chat template with `{% generation %}` markers that renders like the model's own.

    Kept as is when it has the markers; else TRL's training template for the model family
    (`trl.chat_template_utils.get_training_chat_template`); else, for ChatML models whose template
    renders exactly like felix's ChatML template (SmolLM2 among them), that template with markers.

    Raises:
        FelixError: no such template can be made: assistant-only loss would silently train on the prompt.
    """
    template = tokenizer.chat_template
    if template is None:
        if EOS_TOKEN in tokenizer.get_vocab() and "<|im_start|>" in tokenizer.get_vocab():
            return chatml_template()
        raise FelixError(f"{model_id} has no chat template, so its assistant turns cannot be found; "
                         "set `engine.completion_only_loss: false` to train on whole sequences, or use "
                         "`text` / `prompt_completion` datasets")
    if has_generation_markers(template):
        return template if isinstance(template, str) else template["default"]
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        patched = None
    if patched is not None:
        return patched
    chatml = _chatml_training_template(tokenizer)
    if chatml is not None:
        return chatml
    raise FelixError(
        f"the chat template of {model_id} has no `{{% generation %}}` markers and neither TRL nor felix can patch "
        "it, so assistant-only loss would train on the prompt too; set `engine.completion_only_loss: false` to "
        "train on whole conversations knowingly, or use `prompt_completion` datasets"
    )


def _setup_tokenizer(ctx: TrainContext, needs_markers: bool):
    tokenizer = load_tokenizer(ctx)
    tokenizer.padding_side = "right"
    if needs_markers:
        template = training_chat_template(tokenizer, ctx.model.entry.id)
        if template != tokenizer.chat_template:
            ctx.reporter.log("chat template: using a training-compatible version with {% generation %} markers "
                             "(renders the same text); it is saved with the model")
        tokenizer.chat_template = template
    return tokenizer


# -- 2. data ---------------------------------------------------------------------------------------------------

def _ids(encoded) -> list[int]:
    ids = encoded["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_record(record: dict, tokenizer, *, completion_only: bool) -> dict[str, list[int]]:
    """`input_ids` and `labels` (-100 = not trained on) of one record, as TRL 1.16's SFTTrainer builds them.

    - `messages`: the chat template; with `completion_only`, only tokens inside `{% generation %}`
      (the assistant replies and their end-of-turn token) are trained on.
    - `prompt`/`completion` (text or messages): with `completion_only`, only the completion (plus EOS for text).
    - `text`: the text plus EOS, all trained on.

    Raises:
        FelixError: `completion_only` and the chat template marks no assistant token in a conversation.
    """
    eos = tokenizer.eos_token
    tools = record.get("tools")
    if "messages" in record:
        out = tokenizer.apply_chat_template(record["messages"], tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=completion_only)
        ids = _ids(out)
        if not completion_only:
            return {"input_ids": ids, "labels": list(ids)}
        mask = out["assistant_masks"]
        mask = mask[0] if mask and isinstance(mask[0], list) else mask
        if 1 not in mask:
            raise FelixError("the chat template marks no assistant token in a conversation; its "
                             "`{% generation %}` markers do not wrap the assistant replies")
        return {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]}
    if "prompt" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            prompt_ids = _ids(tokenizer.apply_chat_template(prompt, tools=tools, tokenize=True, return_dict=True,
                                                            add_generation_prompt=True))
            ids = _ids(tokenizer.apply_chat_template(prompt + completion, tools=tools, tokenize=True,
                                                     return_dict=True))
        else:
            if not completion.endswith(eos):
                completion = completion + eos
            prompt_ids = _ids(tokenizer(prompt))
            ids = _ids(tokenizer(prompt + completion))
        start = _common_prefix(prompt_ids, ids) if completion_only else 0
        return {"input_ids": ids, "labels": [-100] * start + ids[start:]}
    text = record["text"]
    if not text.endswith(eos):
        text = text + eos
    ids = _ids(tokenizer(text))
    return {"input_ids": ids, "labels": list(ids)}


def tokenize_dataset(ds: ResolvedDataset, tokenizer, *, completion_only: bool) -> Dataset:
    """Columns input_ids, labels, length, source (dataset name), line (1-based line in its JSONL)."""
    columns: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "source": [], "line": []}
    for line, record in read_records(ds):
        tokens = tokenize_record(record, tokenizer, completion_only=completion_only)
        columns["input_ids"].append(tokens["input_ids"])
        columns["labels"].append(tokens["labels"])
        columns["length"].append(len(tokens["input_ids"]))
        columns["source"].append(ds.name)
        columns["line"].append(line)
    return Dataset.from_dict(columns)


def too_long_errors(data: Dataset, max_length: int) -> list[ErrorItem]:
    """One error per record longer than `max_length` tokens: its dataset, JSONL line and length."""
    return [ErrorItem(("datasets", name, line), f"{name} line {line}: {n} tokens > engine.max_length {max_length}",
                      "record_too_long")
            for n, name, line in zip(data["length"], data["source"], data["line"]) if n > max_length]


def _length_error(errors: list[ErrorItem], max_length: int) -> DatasetError:
    errors = sorted(errors, key=lambda e: (str(e.loc[1]), e.loc[2]))
    return length_error(
        f"{len(errors)} record(s) are longer than engine.max_length ({max_length} tokens)", errors,
        "Raise `engine.max_length`, shorten or remove these records, or set `engine.length_policy: truncate` "
        "(cut them) or `drop` (leave them out).")


def apply_length_policy(data: Dataset, *, policy: LengthPolicy, max_length: int, report: LengthReport) -> Dataset:
    """`truncate` or `drop` the records longer than `max_length` tokens, counting them in `report`.

    A truncated record left with no trained token (its reply lay beyond `max_length`) is dropped and
    counted as both. Policy `error` is checked before, over every dataset at once (`too_long_errors`).
    """
    keep = []
    for i, (n, name) in enumerate(zip(data["length"], data["source"])):
        if n > max_length:
            if policy == LengthPolicy.DROP:
                report.add(report.dropped, name)
                continue
            report.add(report.truncated, name)
            if all(label == -100 for label in data[i]["labels"][:max_length]):
                report.add(report.dropped, name)  # nothing left to learn from
                continue
        report.add(report.kept, name)
        keep.append(i)
    if len(keep) == len(data):
        return data

    def cut(row):
        if row["length"] <= max_length:
            return row
        return {**row, "input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length],
                "length": max_length}

    return data.select(keep).map(cut, desc="Truncating")


def _setup_data(ctx: TrainContext, tokenizer, *, completion_only: bool):
    """(train, eval or None, LengthReport over both) as tokenized Datasets.

    Raises:
        DatasetError: `length_policy: error` and records over `max_length` (all listed), or nothing left to train.
    """
    engine = ctx.spec.engine
    parts = [tokenize_dataset(ds, tokenizer, completion_only=completion_only) for ds in ctx.train_data]
    train_ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    eval_ds = None
    if ctx.eval_data is not None:
        eval_ds = tokenize_dataset(ctx.eval_data, tokenizer, completion_only=completion_only)
    else:
        train_ds, eval_ds = eval_split(train_ds, engine.eval.fraction, engine.seed)

    policy, max_length = engine.length_policy, engine.max_length
    if policy == LengthPolicy.ERROR:
        errors = too_long_errors(train_ds, max_length) + (too_long_errors(eval_ds, max_length) if eval_ds else [])
        if errors:
            raise _length_error(errors, max_length)
    report, eval_report = LengthReport(), LengthReport()
    train_ds = apply_length_policy(train_ds, policy=policy, max_length=max_length, report=report)
    if eval_ds is not None:
        eval_ds = apply_length_policy(eval_ds, policy=policy, max_length=max_length, report=eval_report)
        eval_ds = eval_ds if len(eval_ds) else None
    if len(train_ds) == 0:
        raise DatasetError(f"no training record is left after `engine.length_policy: {policy.value}` "
                           f"(engine.max_length {max_length}); raise `engine.max_length`")

    for name in dict.fromkeys(ds.name for ds in ctx.train_data):
        note = [f"{table[name]} {what}" for what, table in (("truncated", report.truncated),
                                                             ("dropped", report.dropped)) if table.get(name)]
        extra = f" ({', '.join(note)} at max_length {max_length})" if note else ""
        ctx.reporter.log(f"dataset {name}: {report.kept.get(name, 0)} records for training{extra}")
    if eval_ds is not None:
        source = ctx.eval_data.name if ctx.eval_data is not None else f"{engine.eval.fraction:g} of the training data"
        note = (f" ({eval_report.num_truncated} truncated, {eval_report.num_dropped} dropped)"
                if eval_report.num_truncated or eval_report.num_dropped else "")
        ctx.reporter.log(f"eval: {len(eval_ds)} records from {source}{note}")
    report.merge(eval_report)
    ctx.reporter.log(f"length policy {policy.value} at {max_length} tokens: {report.num_truncated} truncated, "
                     f"{report.num_dropped} dropped")
    return train_ds, eval_ds, report


def _generation_prompt(data: Dataset) -> list[int]:
    """The fixed prompt for the before/after generation: the prompt part of the first record."""
    first = data[0]
    ids, labels = first["input_ids"], first["labels"]
    start = next((i for i, label in enumerate(labels) if label != -100), len(ids))
    if 0 < start < len(ids):
        return ids[:start]
    return ids[: max(1, min(16, len(ids) // 2))]


# -- 3. trainer ------------------------------------------------------------------------------------------------

class LengthGroupedEpochSampler(torch.utils.data.Sampler):
    """HF's length grouping (`get_length_grouped_indices`) with an order that depends only on (seed, epoch).

    transformers' `LengthGroupedSampler` draws from the global RNG, so a resumed run would see another
    order; seeding per epoch keeps resume exact. Batches hold similar lengths: less padding, the same
    examples and loss semantics as random batches.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class _SFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with the epoch-seeded length-grouped sampler when `group_by_length_seed` is set."""

    group_by_length_seed: int | None = None

    def _get_train_sampler(self, train_dataset=None):
        # HF passes the dataset with its unused columns (our `length`) already removed: measure input_ids
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length_seed is None or "input_ids" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedEpochSampler(lengths, batch, self.group_by_length_seed)


def build_trainer(ctx: TrainContext, model, peft_config, tokenizer, train_ds: Dataset, eval_ds: Dataset | None,
                  callback: FelixCallback) -> _SFTTrainer:
    """The SFTTrainer for a job (pre-tokenized data: TRL packs or pads it, masks come from `labels`)."""
    engine = ctx.spec.engine
    packing = engine.packing is True
    args = training_arguments(
        ctx, SFTConfig, has_eval=eval_ds is not None,
        max_length=engine.max_length,
        packing=packing,
        packing_strategy="bfd",
        eval_packing=packing,
        assistant_only_loss=False,  # the masks are in `labels` already (see tokenize_record)
        completion_only_loss=None,
        dataset_num_proc=None,
    )
    trainer = _SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    if engine.packing == "auto":
        trainer.group_by_length_seed = engine.seed
    return trainer


# -- 4. run and export ---------------------------------------------------------------------------------------------

def _save_final_model(ctx: TrainContext, trainer, tokenizer) -> None:
    save_final_model(ctx, trainer, tokenizer)
    if ctx.is_main_process:  # HF's pickled arguments are no part of a downloadable model
        (ctx.job.model_dir / "training_args.bin").unlink(missing_ok=True)


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
    return metrics


def run(ctx: TrainContext) -> TrainResult:
    """Train a LoRA adapter with SFT; see the module docstring for the steps."""
    engine = ctx.spec.engine
    completion_only = engine.completion_only_loss
    # only `messages` need the template's generation markers; prompt/completion masks come from the prompt's length
    datasets = ctx.train_data + ([ctx.eval_data] if ctx.eval_data is not None else [])
    has_messages = any(ds.format == "messages" for ds in datasets)
    tokenizer = _setup_tokenizer(ctx, needs_markers=completion_only and has_messages)
    train_ds, eval_ds, report = _setup_data(ctx, tokenizer, completion_only=completion_only)
    mode = {True: "packed (bfd)", False: "padded", "auto": "padded, length-grouped batches"}[engine.packing]
    ctx.reporter.log(f"SFT: {len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval records, "
                     f"max_length {engine.max_length}, {mode}, loss on "
                     f"{'assistant turns / completions only' if completion_only else 'whole sequences'}")

    model, peft_config = setup_lora_model(ctx)
    prompt_ids = _generation_prompt(eval_ds if eval_ds is not None else train_ds)
    if ctx.resume_from is None and ctx.is_main_process:
        ctx.reporter.log(f"generation before training: {tokenizer.decode(prompt_ids)!r} -> "
                         f"{generate_greedy(model, tokenizer, prompt_ids)!r}")

    callback = FelixCallback(ctx)
    trainer = build_trainer(ctx, model, peft_config, tokenizer, train_ds, eval_ds, callback)
    log_trainable(ctx, trainer)
    output = train(trainer, ctx, callback)

    if callback.stop_reason is not None:
        return TrainResult(outcome=callback.outcome(),
                           last_checkpoint=callback.last_checkpoint or ctx.checkpoints.latest())

    if eval_ds is not None and callback.eval_step != trainer.state.global_step:
        trainer.evaluate()
        record_final_eval(ctx, callback, trainer)
    if ctx.is_main_process:
        ctx.reporter.log(f"generation after training: {tokenizer.decode(prompt_ids)!r} -> "
                         f"{generate_greedy(trainer.model, tokenizer, prompt_ids)!r}")
    _save_final_model(ctx, trainer, tokenizer)
    if ctx.is_main_process:
        shutil.rmtree(hf_output_dir(ctx), ignore_errors=True)  # scratch: every checkpoint is committed by now
    metrics = _final_metrics(ctx, trainer, output, callback, report, train_ds, eval_ds)
    return TrainResult(outcome=Outcome.COMPLETE, metrics=metrics,
                       last_checkpoint=callback.last_checkpoint or ctx.checkpoints.latest())
