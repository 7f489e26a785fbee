"""The GLiNER2 trainer's data: records, label lists, the eval split, the length policy and the epoch order.

`prepare_data(ctx, word_splitter)` reads the job's datasets (gliner2's `{"input", "output"}`
JSONL, through `felix_train.jsonl`), makes every entity record list every entity label of its
dataset (`fill_entity_labels`: `[]` = none of this type, or gliner2 learns no negatives and
rejects `"entities": {}`), applies `engine.max_length` / `length_policy` (words as gliner2
splits them: its collator truncates words, not sub-word tokens), holds out the eval split
(`split.py`: unseen-mention by default) and renames entity labels to the names the model is asked
(`labels.py`: verbalised, with the datasets' or `engine.label_descriptions` descriptions) and
resolves `engine.ner_decoding` (`auto`: flat unless gold mentions of two labels overlap).
Records stay in memory, so gliner2 never shuffles a caller's list or writes `.lengths.*` files
next to a dataset; the prepared JSONL lands in the job's `work/gliner2/` for inspection.

`epoch_order` length-groups the records: each epoch a seeded permutation cut into windows of 50
batches, each window sorted by length, then the full batches in random order and a short last
batch last; every record once per epoch (or, where entity-free records are more than
`engine.entity_free_share` of the data, a new seeded sample of them each epoch, as many as make up that
share), the order a function of (seed, epoch, global batch) alone. Pure Python at import (torch and
transformers load inside `epoch_order`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from felix_train.errors import DatasetError, ErrorItem, SpecError
from felix_train.jobs import atomic_write_text
from felix_train.jsonl import JSONLError, iter_jsonl
from felix_train.ner_decoding import NESTED, resolve_decoding
from felix_train.spec import EvalSplit, LengthPolicy
from felix_train.trainers.context import ResolvedDataset, TrainContext
from felix_train.trainers.gliner2.labels import dataset_descriptions, label_prompts, prompt_records
from felix_train.trainers.gliner2.split import Split, split_eval, train_mentions

# The order of epoch e under seed s draws from seed s × SEED_STRIDE + e, so that seeds s and s+1 never share one
SEED_STRIDE = 1_000_003


@dataclass
class PreparedData:
    """Records in gliner2's `{"input", "output"}` format, ready to train and evaluate on."""

    train: list[dict]
    eval: list[dict]
    collator_max_len: int | None  # word tokens; set when `length_policy: truncate`
    per_dataset: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: int = 0
    truncated: int = 0
    eval_split: str = EvalSplit.RANDOM.value  # how `eval` was held out (`split.py`)
    split_note: str = ""
    train_mentions: frozenset[str] = frozenset()  # mention keys of the training records (seen/unseen F1)
    label_prompts: dict[str, str] = field(default_factory=dict)  # dataset label -> the name the model sees
    label_descriptions: dict[str, str] = field(default_factory=dict)  # by dataset label
    decoding: str = NESTED  # entity decoding, `engine.ner_decoding` resolved (`felix_train.ner_decoding`)

    @property
    def label_names(self) -> dict[str, str]:
        """{name the model sees: dataset label}, to report predictions under the dataset's labels."""
        return {prompt: label for label, prompt in self.label_prompts.items()}


def read_records(ds: ResolvedDataset) -> list[tuple[int, dict]]:
    """(line number, record) pairs of a dataset file; a bad line is a DatasetError naming it."""
    out = []
    try:
        for lineno, obj in iter_jsonl(ds.path):
            if not isinstance(obj, dict) or not isinstance(obj.get("input"), str) or not isinstance(obj.get("output"), dict):
                raise DatasetError(f"dataset {ds.name!r} line {lineno}: expected a gliner2 record "
                                   '{"input": str, "output": {...}}; got keys '
                                   f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
            out.append((lineno, obj))
    except OSError as err:
        raise DatasetError(f"dataset {ds.name!r}: cannot read {ds.path}: {err}") from err
    except JSONLError as err:
        raise DatasetError(f"dataset {ds.name!r} line {err.line}: {err.message}; "
                           "fix the line or re-register the dataset") from err
    if not out:
        raise DatasetError(f"dataset {ds.name!r} ({ds.path}) holds no records")
    return out


def entity_labels(records: Iterable[dict]) -> list[str]:
    """Every entity label declared in the records (entities or entity_descriptions), in first-seen order."""
    labels: dict[str, None] = {}
    for rec in records:
        out = rec.get("output") or {}
        for key in ("entities", "entity_descriptions"):
            if isinstance(out.get(key), dict):
                labels.update(dict.fromkeys(out[key]))
    return list(labels)


def fill_entity_labels(records: list[dict], labels: list[str]) -> list[dict]:
    """Copies of the records in which every entity record lists every label (`[]` = none of it).

    gliner2 learns only the types a record lists, so without this a sentence with no
    `person` teaches nothing about `person`; it also rejects `"entities": {}`.
    Records without an `entities` task are left as they are.
    """
    out = []
    for rec in records:
        output = rec["output"]
        if isinstance(output.get("entities"), dict):
            ents = dict(output["entities"])
            for label in labels:
                ents.setdefault(label, [])
            rec = {**rec, "output": {**output, "entities": ents}}
        out.append(rec)
    return out


def _word_count(text: str, splitter) -> int:
    return sum(1 for _ in splitter(text, lower=False))


def prepare_data(ctx: TrainContext, word_splitter) -> PreparedData:
    """Load, label-fill, length-check, split and label-prompt the job's datasets (DatasetError on bad data)."""
    spec = ctx.spec
    eng = spec.engine
    max_len = eng.max_length
    policy = eng.length_policy
    too_long: list[str] = []
    dropped = truncated = 0

    def load(ds: ResolvedDataset) -> list[dict]:
        nonlocal dropped, truncated
        rows = read_records(ds)
        recs = fill_entity_labels([r for _, r in rows], entity_labels(r for _, r in rows))
        kept = []
        for (lineno, _), rec in zip(rows, recs):
            words = _word_count(rec["input"], word_splitter)
            if max_len and words > max_len:
                if policy == LengthPolicy.ERROR:
                    too_long.append(f"{ds.name} line {lineno}: {words} words")
                    continue
                if policy == LengthPolicy.DROP:
                    dropped += 1
                    continue
                truncated += 1
            kept.append(rec)
        return kept

    loaded = {ds.name: load(ds) for ds in ctx.train_data}
    if ctx.eval_data is None:
        split = split_eval(loaded, eng.eval.fraction, eng.seed, eng.eval.split)
    else:
        split = Split({name: (recs, []) for name, recs in loaded.items()}, EvalSplit.RANDOM,
                      f"eval dataset {ctx.eval_data.name}")
    per_dataset: dict[str, dict[str, int]] = {}
    train: list[dict] = []
    held: list[dict] = []
    for name, recs in loaded.items():
        tr, ev = split.parts[name]
        per_dataset[name] = {"records": len(recs), "train": len(tr), "eval": len(ev)}
        train.extend(tr)
        held.extend(ev)
    if ctx.eval_data is not None:
        held = load(ctx.eval_data)
        per_dataset.setdefault(ctx.eval_data.name, {})["eval_dataset"] = len(held)
    if too_long:
        shown = "; ".join(too_long[:20]) + (f"; ... and {len(too_long) - 20} more" if len(too_long) > 20 else "")
        raise DatasetError(
            f"{len(too_long)} record(s) are longer than engine.max_length={max_len} words: {shown}. "
            "Raise `engine.max_length`, or set `engine.length_policy: truncate` or `drop`.",
            errors=[ErrorItem(("engine", "max_length"), line, "record_too_long") for line in too_long[:100]],
        )
    if not train:
        raise DatasetError("no training records are left after the eval split and length policy; "
                           "add records or lower `engine.eval.fraction`")
    labels = entity_labels(train + held)
    descriptions = {**dataset_descriptions(train + held), **(eng.label_descriptions or {})}
    unknown = sorted(set(eng.label_descriptions or {}) - set(labels))
    if unknown:
        raise SpecError([ErrorItem(("engine", "label_descriptions"), f"names label(s) {unknown} that no dataset of "
                                   f"the job has; its labels are {labels}", "unknown_label")])
    prompts = label_prompts(labels, verbalize=eng.label_verbalize)
    return PreparedData(
        train=prompt_records(train, prompts, descriptions), eval=prompt_records(held, prompts, descriptions),
        per_dataset=per_dataset, dropped=dropped, truncated=truncated,
        collator_max_len=max_len if policy == LengthPolicy.TRUNCATE else None,
        eval_split=split.kind.value, split_note=split.note, train_mentions=train_mentions(train),
        label_prompts=prompts, label_descriptions={k: v for k, v in descriptions.items() if k in prompts},
        decoding=resolve_decoding(eng.ner_decoding, train + held))


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def entity_only(record: dict) -> dict | None:
    """The `entities` of a record that holds no other task (no classification, relation, structure), else None."""
    output = record.get("output") or {}
    ents = output.get("entities")
    if not isinstance(ents, dict) or any(value for key, value in output.items()
                                         if key not in ("entities", "entity_descriptions")):
        return None
    return ents


def entity_free(record: dict) -> bool:
    """True for an entity-only record (`entity_only`) with no mention of any label."""
    ents = entity_only(record)
    return ents is not None and not any(ents.values())


def entity_free_kept(num_records: int, num_entity_free: int, entity_free_share: float) -> int:
    """Entity-free records an epoch trains on: all of them, or as many as make up `entity_free_share` of the epoch
    (`engine.entity_free_share` is the most they may be) where the data holds more."""
    with_entities = num_records - num_entity_free
    if entity_free_share >= 1 or with_entities == 0:
        return num_entity_free
    return min(num_entity_free, round(entity_free_share / (1 - entity_free_share) * with_entities))


def epoch_size(num_records: int, num_entity_free: int, entity_free_share: float) -> int:
    """Records in every epoch: those with an entity, and `entity_free_kept` entity-free ones."""
    return num_records - num_entity_free + entity_free_kept(num_records, num_entity_free, entity_free_share)


def epoch_order(lengths: list[int], batch_size: int, *, seed: int, epoch: int, entity_free: list[int] | None = None,
                entity_free_share: float = 1.0) -> list[int]:
    """The length-grouped record order of epoch `epoch` over records of `lengths` words, in batches of `batch_size`.

    `felix_train.data.grouping.length_grouped_order` with transformers' mega-batches: batches of similar
    length (a batch's span grid is max words × max span width), in random order, seeded by (seed, epoch).
    Where the `entity_free` indices are more than `entity_free_share` of the records, the epoch holds every
    other record and a seeded sample of `entity_free_kept` of them (`epoch_size` records; a new sample each
    epoch, drawn from the same generator first); otherwise it is the plain order, draw for draw.

    Not gliner2's `LengthGroupedSampler`: it shares the idea but sorts ascending, keeps the longest
    records of the last window for the short batch and seeds `seed + epoch`, so every order, and every
    result measured with this one, would change; on the tiny test model the loss curve then depends
    on which seed it draws (see the issue 15 report).
    """
    import torch

    from felix_train.data.grouping import length_grouped_order

    g = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
    keep = entity_free_kept(len(lengths), len(entity_free or []), entity_free_share)
    if not entity_free or keep >= len(entity_free):
        return length_grouped_order(lengths, batch_size, generator=g)
    left_out = {entity_free[i] for i in torch.randperm(len(entity_free), generator=g)[keep:].tolist()}
    pool = [i for i in range(len(lengths)) if i not in left_out]
    return [pool[j] for j in length_grouped_order([lengths[i] for i in pool], batch_size, generator=g)]
