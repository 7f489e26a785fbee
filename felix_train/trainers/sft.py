"""LoRA supervised fine-tuning of decoder LLMs with TRL's `SFTTrainer` (`training_algorithm: sft`).

Reads top to bottom like a recipe:

1. `configure_threads`: intra-op threads on every physical core this process may use (affinity mask and
   cgroup quota, shared between the ranks of a node) unless `OMP_NUM_THREADS` is set.
2. `_setup_tokenizer`: the base tokenizer, with a chat template that has `{% generation %}` markers
   (kept, patched by TRL, or ChatML-with-markers for ChatML models), so assistant-only loss is exact.
3. `_setup_data`: every dataset's JSONL tokenized the way TRL 1.16's `SFTTrainer` does (chat template,
   assistant / completion masks, EOS), labels `-100` outside the trained span, once per dataset content,
   tokenizer and masking (cached under `$FELIX_HOME/cache/sft-tokens/`); a seeded eval split; the length
   policy (`error` lists the offending dataset lines, `truncate` and `drop` are counted).
   Formats (`messages`, `prompt_completion` text or conversational, `text`) may be mixed in one job.
4. `setup_lora_model` (shared with DPO/GRPO in `lm_common`): the base model plus a new LoRA adapter, or the
   adapter of a checkpoint UUID, continued.
5. `SFTTrainer` on the pre-tokenized data, hooked by `FelixCallback`, batched as `choose_batching` says:
   `engine.packing: true` packs with TRL's `bfd`; `auto` (the default) is padding-free where attention has
   variable-length kernels (flash attention) and otherwise pads batches of similar lengths
   (`LengthGroupedEpochSampler`: exact, resume-safe); `false` pads batches in random order, exactly like
   a plain TRL script (`tests/trainers/test_parity.py`). On CPU the LM head is projected on labelled
   positions only.
6. The adapter, tokenizer and chat template into `model/` (and the merged model into `model/merged/`),
   through `lm_common.complete`.

One greedy generation for a fixed prompt (from the data) is logged before and after training; for a new
adapter the "before" one is the base model's, sampled after training with the adapter disabled, so it
costs nothing on the way to the first step. Samples taken after training run on every rank when the model
is sharded (FSDP, DeepSpeed ZeRO-3), whose forward needs them all (`lm_common.sample_trained`).
Python's collector is frozen over the run (`_frozen_heap`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from felix_train.errors import DatasetError, ErrorItem, FelixError
from felix_train.models.causal_lm import EOS_TOKEN, chatml_template
from felix_train.spec import LengthPolicy
from felix_train.trainers.context import ResolvedDataset, TrainContext, TrainResult
from felix_train.trainers.hf_bridge import FelixCallback, run_train_loss, train, training_arguments
from felix_train.trainers.lm_common import (
    LengthReport,
    complete,
    eval_split,
    final_eval,
    generate_greedy,
    length_error,
    load_tokenizer,
    log_trainable,
    read_records,
    sample_trained,
    setup_lora_model,
    stopped_result,
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


TOKEN_CACHE_VERSION = 1
"""Bump when `tokenize_record` changes what it produces: older cached tokenizations are then ignored."""
TOKEN_CACHE_DIRNAME = "sft-tokens"
"""Tokenized datasets are cached under `$FELIX_HOME/cache/sft-tokens/<key>/` (Arrow, memory-mapped on load)."""


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything about `tokenizer` that decides the ids `tokenize_record` produces.

    The whole tokenizer (the fast tokenizer's JSON: vocabulary, merges, normalizer, pre-tokenizer,
    post-processor, added tokens), the chat template in use, the special tokens, and the library versions.
    """
    import tokenizers
    import transformers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = {
        "class": type(tokenizer).__name__, "tokenizer": hashlib.sha256(body.encode()).hexdigest(),
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else
        json.dumps(tokenizer.chat_template, sort_keys=True),
        "special": [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token],
        "add_bos": getattr(tokenizer, "add_bos_token", None), "add_eos": getattr(tokenizer, "add_eos_token", None),
        "versions": [transformers.__version__, tokenizers.__version__, TOKEN_CACHE_VERSION],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def token_cache_path(cache_root: Path, ds: ResolvedDataset, tokenizer_digest: str, *, completion_only: bool) -> Path:
    """Where the tokenization of `ds` (by content, not name) with this tokenizer and masking is cached."""
    key = hashlib.sha256(f"{_file_sha256(ds.path)}:{tokenizer_digest}:{int(completion_only)}".encode()).hexdigest()
    return cache_root / key[:40]


def _tokenize_records(ds: ResolvedDataset, tokenizer, *, completion_only: bool) -> Dataset:
    columns: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "line": []}
    for line, record in read_records(ds):
        tokens = tokenize_record(record, tokenizer, completion_only=completion_only)
        columns["input_ids"].append(tokens["input_ids"])
        columns["labels"].append(tokens["labels"])
        columns["length"].append(len(tokens["input_ids"]))
        columns["line"].append(line)
    return Dataset.from_dict(columns)


def _save_cached(data: Dataset, dest: Path) -> None:
    """Write `data` beside `dest`, then rename: a reader never sees a half-written cache entry."""
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        data.save_to_disk(str(tmp))
        os.replace(tmp, dest)
    except OSError:  # another job cached the same dataset first (dest exists), or the disk is full
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_dataset(ds: ResolvedDataset, tokenizer, *, completion_only: bool, cache_root: Path | None = None,
                     tokenizer_digest: str | None = None) -> tuple[Dataset, bool]:
    """(columns input_ids, labels, length, source (dataset name), line (1-based line in its JSONL), cache hit).

    With `cache_root`, the tokenization is read from, or else written to, `token_cache_path(...)`: a dataset is
    tokenized once per content, tokenizer and masking, whatever its name and whichever job uses it.
    """
    cached = None
    if cache_root is not None:
        digest = tokenizer_digest or tokenizer_fingerprint(tokenizer)
        cached = token_cache_path(cache_root, ds, digest, completion_only=completion_only)
    data, hit = None, False
    if cached is not None and cached.is_dir():
        try:
            data, hit = load_from_disk(str(cached), keep_in_memory=True), True
        except (OSError, ValueError):  # unreadable entry: tokenize again and replace it
            shutil.rmtree(cached, ignore_errors=True)
    if data is None:
        data = _tokenize_records(ds, tokenizer, completion_only=completion_only)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            _save_cached(data, cached)
    return data.add_column("source", [ds.name] * len(data)), hit


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
    keep, cut_any = [], False
    for i, (n, name) in enumerate(zip(data["length"], data["source"])):
        if n > max_length:
            if policy == LengthPolicy.DROP:
                report.add(report.dropped, name)
                continue
            report.add(report.truncated, name)
            cut_any = True
            if all(label == -100 for label in data[i]["labels"][:max_length]):
                report.add(report.dropped, name)  # nothing left to learn from
                continue
        report.add(report.kept, name)
        keep.append(i)
    if len(keep) == len(data) and not cut_any:
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
    cache_root = ctx.job.home / "cache" / TOKEN_CACHE_DIRNAME
    digest = tokenizer_fingerprint(tokenizer)
    hits = []

    def tokenized(ds: ResolvedDataset) -> Dataset:
        data, hit = tokenize_dataset(ds, tokenizer, completion_only=completion_only, cache_root=cache_root,
                                     tokenizer_digest=digest)
        if hit:
            hits.append(ds.name)
        return data

    parts = [tokenized(ds) for ds in ctx.train_data]
    train_ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    eval_ds = None
    if ctx.eval_data is not None:
        eval_ds = tokenized(ctx.eval_data)
    else:
        train_ds, eval_ds = eval_split(train_ds, engine.eval.fraction, engine.seed)

    if hits:
        ctx.reporter.log(f"tokenization of {', '.join(dict.fromkeys(hits))} read from the cache ({cache_root})")
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


@contextlib.contextmanager
def _score_labelled_positions_only():
    """For the calls inside: TRL's fused LM head projects only the positions that have a label.

    TRL 1.16 does this on Triton devices and projects every position elsewhere (so that Neuron compiles one
    tile shape); on CPU nothing compiles, and the prompt and padding positions (a third of a chat batch or
    more) are pure waste. Same per-token log-probabilities, loss and metrics. A no-op if TRL changes.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


class _SFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with the epoch-seeded length-grouped sampler when `group_by_length_seed` is set,
    and the LM head scored on labelled positions only when `score_labelled_only` is set (CPU)."""

    group_by_length_seed: int | None = None
    score_labelled_only: bool = False
    batching: Batching | None = None

    def _get_train_sampler(self, train_dataset=None):
        # HF passes the dataset with its unused columns (our `length`) already removed: measure input_ids
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length_seed is None or "input_ids" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedEpochSampler(lengths, batch, self.group_by_length_seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scope = _score_labelled_positions_only() if self.score_labelled_only else contextlib.nullcontext()
        with scope:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)


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
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    if mode == Batching.GROUPED:
        trainer.group_by_length_seed = engine.seed
    trainer.score_labelled_only = ctx.device == "cpu"
    trainer.batching = mode
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
    return metrics


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (a container's `--cpus`)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            if q > 0:
                quota = q / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def configure_threads(ctx: TrainContext) -> None:
    """Intra-op threads: torch's default (one per physical core), but never more than this process may use.

    torch counts the machine's cores, not the container's CPU quota or the affinity mask, nor the other
    ranks on the node; more threads than CPUs make every parallel op wait for descheduled threads. Left
    alone when OMP_NUM_THREADS is set. The log line says what was chosen; on a busy machine with OpenMP's
    default (spinning) wait policy it also says how to avoid a many-fold slowdown.
    """
    cpus = usable_cpus()
    explicit = os.environ.get("OMP_NUM_THREADS")
    if not explicit:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpus // local_ranks)))
    threads = torch.get_num_threads()
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    ctx.reporter.log(f"CPU threads: {threads} ({'OMP_NUM_THREADS' if explicit else f'{cpus} usable CPUs'}), "
                     f"OpenMP wait policy {policy.lower() or 'default (spinning)'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if ctx.device == "cpu" and threads > 1 and policy != "PASSIVE" and load > cpus:
        ctx.reporter.log(f"the machine is busy (load {load:.1f} on {cpus} CPUs): spinning OpenMP threads can slow "
                         "CPU training many-fold here; start the job with OMP_WAIT_POLICY=PASSIVE (or "
                         "OMP_NUM_THREADS=1)", level="WARN")


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
    tokenizer = _setup_tokenizer(ctx, needs_markers=completion_only and has_messages)
    train_ds, eval_ds, report = _setup_data(ctx, tokenizer, completion_only=completion_only)

    model, peft_config = setup_lora_model(ctx)
    prompt_ids = _generation_prompt(eval_ds if eval_ds is not None else train_ds)
    callback = FelixCallback(ctx)
    trainer = build_trainer(ctx, model, peft_config, tokenizer, train_ds, eval_ds, callback)
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
