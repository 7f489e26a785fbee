"""SFT's data: records tokenized as TRL's `SFTTrainer` would, cached, split and held to `engine.max_length`.

- `tokenize_record(record, tokenizer, completion_only=...)`: `input_ids` and `labels` (-100 outside the trained
  span) of one `messages`, `prompt`/`completion` (text or conversational) or `text` record, exactly as TRL 1.16
  builds them (chat template, assistant / completion masks, EOS). Formats may be mixed in one job.
- `tokenize_dataset(...)`: a whole dataset, read once per content, tokenizer and masking from the cache under
  `$FELIX_HOME/cache/sft-tokens/` (Arrow, memory-mapped), or tokenized and written there.
- The length policy: `too_long_errors` (`error`: every offending dataset line listed) and `apply_length_policy`
  (`truncate` and `drop`, counted in a `LengthReport`).
- `setup_data(ctx, tokenizer, completion_only=...)`: the train and eval Datasets of a job (a seeded eval split
  unless `engine.eval.dataset` is given), the length policy applied, what happened logged.
- `generation_prompt(data)`: the fixed prompt of the before/after generation samples.

Imports `datasets` at module import: load it only inside a trainer's `run()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_from_disk

from felix_train.data.sft_tokens import tokenize_record  # noqa: F401 - the one tokenization (the estimate's too)
from felix_train.errors import DatasetError, ErrorItem
from felix_train.spec import LengthPolicy
from felix_train.trainers.context import ResolvedDataset, TrainContext
from felix_train.trainers.lm_common import LengthReport, eval_split, length_error, read_records

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
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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


def setup_data(ctx: TrainContext, tokenizer, *, completion_only: bool):
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
    ctx.reporter.warn_lengths(truncated=report.truncated, dropped=report.dropped, max_length=max_length,
                              policy=policy.value)
    return train_ds, eval_ds, report


def generation_prompt(data: Dataset) -> list[int]:
    """The fixed prompt for the before/after generation: the prompt part of the first record."""
    first = data[0]
    ids, labels = first["input_ids"], first["labels"]
    start = next((i for i, label in enumerate(labels) if label != -100), len(ids))
    if 0 < start < len(ids):
        return ids[:start]
    return ids[: max(1, min(16, len(ids) // 2))]
