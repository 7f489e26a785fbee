"""Records, tokens, steps and epochs of a job before it runs: the trainers' own rules, without torch.

- GLiNER2 (`count_gliner2`): records read and label-filled as `trainers/gliner2/data.py` does, words counted
  by gliner2's splitter (`data.length_policy.gliner2_word_splitter`), the length policy, then the trainer's
  own eval split (`trainers/gliner2/split.split_eval`, unseen-mention or random). Tokens are words (after
  truncation) and the trained units are records (samples).
- SFT (`count_sft`): every record tokenized by `data.sft_tokens.tokenize_record` (the trainer's function)
  with transformers' `PreTrainedTokenizerFast` from the model folder (no torch), the seeded split of
  `datasets.Dataset.train_test_split` (numpy's `default_rng(seed).permutation`: the first `n_eval` held out),
  then the policy on each side.
- DPO / GRPO (`count_records_only`): records and the split; their length policy is measured on TRL's
  tokenization at run time, so tokens are not counted here (`exact: false`).

Steps follow the trainers: GLiNER2 `batches = ceil(train / (batch_size × processes))`, `steps/epoch =
max(1, ceil(batches / accumulation))`; HF/TRL `batches = ceil(ceil(train / batch_size) / processes)`, the
same steps/epoch; `total = engine.max_steps or steps/epoch × num_epochs`, `epochs = ceil(total / steps/epoch)`.

Raises `DatasetError` (items `record_too_long`, each with file and line) where `length_policy: error` would
refuse a record at run time, so `felix-train validate` and the estimate refuse it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from felix_train.catalog import Algorithm, ModelFamily
from felix_train.data.length_policy import (
    Measured, PolicyCount, apply_policy, gliner2_word_splitter, too_long_errors, word_count,
)
from felix_train.errors import DatasetError
from felix_train.spec import JobSpec, LengthPolicy
from felix_train.trainers.context import ResolvedDataset, resolve_datasets


@dataclass
class Counts:
    """What a job trains on, per dataset and in all."""

    per_dataset: dict[str, dict] = field(default_factory=dict)  # name -> {train: PolicyCount json, eval: ...}
    train_records: int = 0
    eval_records: int = 0
    train_tokens: int | None = None  # one epoch (words for GLiNER2)
    unit: str = "tokens"
    steps_per_epoch: int = 0
    total_steps: int = 0
    epochs: int = 0
    trained_records: int = 0  # over the whole run
    trained_tokens: int | None = None
    mean_length: float = 0.0
    max_length_seen: int = 0
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def schedule(spec: JobSpec, n_train: int, *, hf: bool) -> tuple[int, int, int]:
    """(steps per epoch, total steps, epochs) as the trainer computes them (see the module docstring)."""
    eng = spec.engine
    world = eng.distributed.num_processes
    if hf:
        batches = math.ceil(math.ceil(n_train / eng.batch_size) / world)
    else:
        batches = math.ceil(n_train / (eng.batch_size * world))
    per_epoch = max(1, math.ceil(batches / eng.gradient_accumulation_steps))
    total = eng.max_steps or per_epoch * spec.num_epochs
    return per_epoch, total, math.ceil(total / per_epoch)


def _records_trained(spec: JobSpec, n_train: int, per_epoch: int, total: int, *, hf: bool) -> int:
    """Records seen over `total` steps: whole epochs, then the first full batches of a partial one."""
    eng = spec.engine
    full, rest = divmod(total, per_epoch)
    global_batch = eng.batch_size * eng.distributed.num_processes
    return full * n_train + min(rest * eng.gradient_accumulation_steps * global_batch, n_train)


def _refuse(measured: list[Measured], spec: JobSpec, datasets: list[ResolvedDataset], unit: str) -> None:
    if spec.engine.length_policy != LengthPolicy.ERROR:
        return
    errors = too_long_errors(measured, spec.engine.max_length, unit=unit, paths={d.name: str(d.path) for d in datasets})
    if errors:
        shown = "; ".join(e.msg.split(";")[0] for e in errors[:20])
        raise DatasetError(f"{len(errors)} record(s) are longer than engine.max_length={spec.engine.max_length} "
                           f"{unit}: {shown}. Raise `engine.max_length`, or set `engine.length_policy: truncate` or "
                           "`drop`.", errors=errors)


def _fill(counts: Counts, spec: JobSpec, train: dict[str, PolicyCount], held: dict[str, PolicyCount],
          names: list[str], *, hf: bool, unit: str, epoch_records: int | None = None) -> Counts:
    counts.unit = unit
    for name in names:
        counts.per_dataset[name] = {"train": train.get(name, PolicyCount()).to_json(),
                                    "eval": held.get(name, PolicyCount()).to_json()}
    for name in held:
        counts.per_dataset.setdefault(name, {"train": PolicyCount().to_json(), "eval": held[name].to_json()})
    counts.train_records = sum(c.records for c in train.values())
    counts.eval_records = sum(c.records for c in held.values())
    counts.train_tokens = sum(c.tokens for c in train.values())
    counts.mean_length = counts.train_tokens / counts.train_records if counts.train_records else 0.0
    per_epoch = counts.train_records if epoch_records is None else epoch_records
    counts.steps_per_epoch, counts.total_steps, counts.epochs = schedule(spec, per_epoch, hf=hf)
    counts.trained_records = _records_trained(spec, per_epoch, counts.steps_per_epoch, counts.total_steps, hf=hf)
    if per_epoch != counts.train_records:  # GLiNER2's entity_free_share: each epoch a sample of the records
        counts.trained_tokens = round(counts.trained_records * counts.mean_length)
        counts.exact = False
        counts.notes.append(f"engine.entity_free_share: {per_epoch} of the {counts.train_records} training records per "
                            "epoch; their words are estimated at the mean length")
        return counts
    full, rest = divmod(counts.total_steps, counts.steps_per_epoch)
    counts.trained_tokens = full * counts.train_tokens
    if rest:  # a partial epoch: its records depend on the epoch order; the mean stands in
        counts.trained_tokens += round((counts.trained_records - full * counts.train_records) * counts.mean_length)
        counts.exact = False
        counts.notes.append("engine.max_steps ends inside an epoch: its tokens are estimated at the mean length")
    return counts


# -- GLiNER2 ------------------------------------------------------------------------------------------------------

def count_gliner2(spec: JobSpec, datasets: list[ResolvedDataset], eval_ds: ResolvedDataset | None) -> Counts:
    from felix_train.trainers.gliner2.data import entity_free, entity_labels, epoch_size, fill_entity_labels, read_records
    from felix_train.trainers.gliner2.split import split_eval

    eng = spec.engine
    splitter = gliner2_word_splitter()
    loaded: dict[str, list[tuple[Measured, dict]]] = {}
    measured: list[Measured] = []
    for ds in datasets + ([eval_ds] if eval_ds else []):
        rows = read_records(ds)
        recs = fill_entity_labels([r for _, r in rows], entity_labels(r for _, r in rows))
        items = [(Measured(ds.name, line, word_count(rec["input"], splitter)), rec) for (line, _), rec in zip(rows, recs)]
        loaded[ds.name] = items
        measured.extend(m for m, _ in items)
    _refuse(measured, spec, datasets + ([eval_ds] if eval_ds else []), "words")
    policy = eng.length_policy.value
    counts = Counts()
    pre: dict[str, list[dict]] = {}
    lengths: dict[int, int] = {}
    before: dict[str, PolicyCount] = {}
    for ds in datasets:
        kept_m = apply_policy([m for m, _ in loaded[ds.name]], policy=policy, max_length=eng.max_length,
                              counts=before)[1]
        kept_lines = {m.line: m.length for m in kept_m}
        pre[ds.name] = [rec for m, rec in loaded[ds.name] if m.line in kept_lines]
        for m, rec in loaded[ds.name]:
            if m.line in kept_lines:
                lengths[id(rec)] = kept_lines[m.line]
    if eval_ds is None:
        split = split_eval(pre, eng.eval.fraction, eng.seed, eng.eval.split)
        parts = split.parts
        counts.notes.append(f"eval split {split.kind.value}: {split.note}")
    else:
        parts = {name: (recs, []) for name, recs in pre.items()}
    train_c: dict[str, PolicyCount] = {}
    held_c: dict[str, PolicyCount] = {}
    for name, (tr, ev) in parts.items():
        for side, table in ((tr, train_c), (ev, held_c)):
            c = table.setdefault(name, PolicyCount())
            c.records, c.tokens = len(side), sum(lengths[id(r)] for r in side)
        # the policy's cuts, reported on the train side with the dataset's reasons (before the split)
        train_c[name].truncated, train_c[name].dropped = before[name].truncated, before[name].dropped
        train_c[name].reasons = dict(before[name].reasons)
    if eval_ds is not None:
        held_c = apply_policy([m for m, _ in loaded[eval_ds.name]], policy=policy, max_length=eng.max_length)[0]
    n_free = sum(entity_free(rec) for tr, _ in parts.values() for rec in tr)
    counts = _fill(counts, spec, train_c, held_c, [d.name for d in datasets], hf=False, unit="words",
                   epoch_records=epoch_size(sum(c.records for c in train_c.values()), n_free, eng.entity_free_share))
    counts.max_length_seen = max((m.length for m in measured), default=0)
    return counts


# -- SFT --------------------------------------------------------------------------------------------------------

def load_fast_tokenizer(model_path: Path):
    """transformers' fast tokenizer from the model folder: the ids `AutoTokenizer` gives, without torch."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(model_path))


def _sft_tokenizer(spec: JobSpec, model_path: Path, needs_masks: bool):
    tokenizer = load_fast_tokenizer(model_path)
    if needs_masks:  # the chat template with `{% generation %}` markers the trainer uses (imports TRL: torch)
        from felix_train.trainers.sft_template import training_chat_template

        tokenizer.chat_template = training_chat_template(tokenizer, spec.entry().id)
    return tokenizer


def seeded_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) indices of `lm_common.eval_split`: datasets' `train_test_split(test_size, seed, shuffle)`."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    import numpy as np

    n_eval = min(max(1, round(n * fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return perm[n_eval:], perm[:n_eval]


def count_sft(spec: JobSpec, datasets: list[ResolvedDataset], eval_ds: ResolvedDataset | None,
              model_path: Path) -> Counts:
    from felix_train.data.sft_tokens import tokenize_record
    from felix_train.jsonl import read_jsonl

    eng = spec.engine
    everything = datasets + ([eval_ds] if eval_ds else [])
    completion_only = eng.completion_only_loss
    needs_masks = (completion_only and eng.length_policy == LengthPolicy.TRUNCATE
                   and any(d.format == "messages" for d in everything))
    tokenizer = _sft_tokenizer(spec, model_path, needs_masks)
    by_name: dict[str, list[Measured]] = {}
    for ds in everything:
        items = []
        # the masks matter only to `truncate` (a cut record with no trained token left is dropped); `messages`
        # masks need the training template, so without `truncate` they are tokenized whole (the same ids)
        masked = completion_only and (ds.format != "messages" or needs_masks)
        for line, rec in read_jsonl(ds.path):
            tok = tokenize_record(rec, tokenizer, completion_only=masked)
            trained = any(label != -100 for label in tok["labels"][:eng.max_length])
            items.append(Measured(ds.name, line, len(tok["input_ids"]), trained))
        by_name[ds.name] = items
    _refuse([m for items in by_name.values() for m in items], spec, everything, "tokens")
    train_all = [m for ds in datasets for m in by_name[ds.name]]
    if eval_ds is None:
        tr_idx, ev_idx = seeded_split(len(train_all), eng.eval.fraction, eng.seed)
        train_m, eval_m = [train_all[i] for i in tr_idx], [train_all[i] for i in ev_idx]
    else:
        train_m, eval_m = train_all, by_name[eval_ds.name]
    policy = eng.length_policy.value
    train_c = apply_policy(train_m, policy=policy, max_length=eng.max_length)[0]
    held_c = apply_policy(eval_m, policy=policy, max_length=eng.max_length)[0]
    counts = _fill(Counts(), spec, train_c, held_c, [d.name for d in datasets], hf=True, unit="tokens")
    counts.max_length_seen = max((m.length for m in train_all), default=0)
    if eng.packing is True:
        rows = math.ceil(counts.train_tokens / eng.max_length)
        counts.steps_per_epoch, counts.total_steps, counts.epochs = schedule(spec, rows, hf=True)
        counts.exact = False
        counts.notes.append(f"packing: true: about {rows} packed rows of {eng.max_length} tokens (TRL's bfd packs at "
                            "run time); steps from that")
    return counts


# -- DPO / GRPO ---------------------------------------------------------------------------------------------------

def count_records_only(spec: JobSpec, datasets: list[ResolvedDataset], eval_ds: ResolvedDataset | None) -> Counts:
    n = sum(d.num_records or 0 for d in datasets)
    tr, ev = seeded_split(n, spec.engine.eval.fraction, spec.engine.seed) if eval_ds is None else (range(n), [])
    counts = Counts(train_records=len(tr), eval_records=len(ev) if eval_ds is None else (eval_ds.num_records or 0),
                    exact=spec.training_algorithm == Algorithm.DPO, train_tokens=None)
    for d in datasets:
        counts.per_dataset[d.name] = {"records": d.num_records}
    counts.steps_per_epoch, counts.total_steps, counts.epochs = schedule(spec, counts.train_records, hf=True)
    counts.trained_records = _records_trained(spec, counts.train_records, counts.steps_per_epoch, counts.total_steps,
                                              hf=True)
    counts.notes.append(f"{spec.training_algorithm.value}: the length policy is applied on TRL's tokenization at run "
                        "time; tokens are not counted before it, and records it drops are not subtracted")
    if spec.training_algorithm == Algorithm.GRPO:
        counts.notes.append("grpo: steps follow TRL's generation batches; counted here as for SFT")
    return counts


def count(spec: JobSpec, *, home, model_path: Path | None = None, materialise: bool = True) -> Counts:
    """The counts of a resolved spec (see the module docstring). `materialise=False` (the API process) never
    builds or converts a model to read its tokenizer: where it is not on disk yet, SFT is counted in records only
    and the token check is left to the run."""
    datasets, eval_ds = resolve_datasets(spec, home)
    family = spec.entry().family
    if family == ModelFamily.GLINER2:
        return count_gliner2(spec, datasets, eval_ds)
    if spec.training_algorithm == Algorithm.SFT:
        if model_path is None:
            from felix_train.models import ready_model, resolve_model

            model_path = resolve_model(spec.entry(), home) if materialise else ready_model(spec.entry(), home)
        if model_path is None:
            counts = count_records_only(spec, datasets, eval_ds)
            counts.notes.append(f"{spec.base_model} is not materialised yet: tokens are counted when the job runs")
            return counts
        return count_sft(spec, datasets, eval_ds, Path(model_path))
    return count_records_only(spec, datasets, eval_ds)
