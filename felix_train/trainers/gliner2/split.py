"""The eval split of a GLiNER2 job: unseen-mention (default) or random, and which mentions training saw.

A random split of entity data shares surface forms between training and eval (the same names
recur), so its F1 rewards memorising names; new text is mostly new names. `split_unseen` holds out
records whose mentions occur nowhere in the training part: records are joined into groups by the
mentions they share (union-find over normalised, case-folded mention text, across every dataset of
the job), the groups are taken whole in a seeded order while each dataset still needs eval records
(a group that would overshoot is skipped), and entity-free records are held out at random in the
same proportion as the entity records of their dataset. Where that yields fewer than
`MIN_UNSEEN_EVAL` eval records with entities (a small or densely connected dataset) the job falls
back to the random split, and eval reports F1 on seen and unseen mentions apart
(`mention_key` / `train_mentions` feed that). Pure Python.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from felix_train.metrics_ner import mentions_of, normalize_mention
from felix_train.spec import EvalSplit

MIN_UNSEEN_EVAL = 30  # fewer eval records with entities than this: the random split, seen/unseen F1 apart


def mention_key(text: str) -> str:
    """How mentions are compared for seen/unseen: whitespace-normalised and case-folded."""
    return normalize_mention(text).casefold()


def record_mentions(rec: dict) -> set[str]:
    """The mention keys of a gliner2 record's `output.entities` (empty for a record without any)."""
    ents = (rec.get("output") or {}).get("entities")
    if not isinstance(ents, dict):
        return set()
    return {mention_key(m) for value in ents.values() for m in mentions_of(value) if mention_key(m)}


def train_mentions(records: list[dict]) -> frozenset[str]:
    return frozenset(m for rec in records for m in record_mentions(rec))


def split_random(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded held-out split: round(n × fraction) records (at least 1, leaving at least 1 to train on)."""
    n = len(records)
    if fraction <= 0 or n < 2:
        return records, []
    k = min(max(1, round(n * fraction)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


@dataclass
class Split:
    """Train and eval records per dataset (in the datasets' order), and which split made them."""

    parts: dict[str, tuple[list[dict], list[dict]]]
    kind: EvalSplit
    note: str = ""


def split_unseen(datasets: dict[str, list[dict]], fraction: float, seed: int) -> Split | None:
    """The unseen-mention split of every dataset (see the module docstring); None where it holds fewer than
    `MIN_UNSEEN_EVAL` eval records with entities."""
    ids = [(name, i) for name, recs in datasets.items() for i in range(len(recs))]
    mentions = {key: record_mentions(datasets[key[0]][key[1]]) for key in ids}
    parent = {key: key for key in ids if mentions[key]}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, tuple] = {}
    for key in parent:
        for m in mentions[key]:
            other = owner.setdefault(m, key)
            a, b = find(key), find(other)
            if a != b:
                parent[a] = b
    groups: dict[tuple, list[tuple]] = {}
    for key in parent:  # ids in dataset and record order: groups and their members come out deterministic
        groups.setdefault(find(key), []).append(key)
    order = list(groups.values())
    random.Random(seed).shuffle(order)

    entity_count = {name: sum(1 for i in range(len(recs)) if mentions[(name, i)]) for name, recs in datasets.items()}
    need = {name: round(n * fraction) for name, n in entity_count.items()}
    held: set[tuple] = set()
    got = dict.fromkeys(datasets, 0)
    for group in order:
        if all(got[n] >= need[n] for n in need):
            break
        per: dict[str, int] = {}
        for name, _ in group:
            per[name] = per.get(name, 0) + 1
        if all(got[name] + c <= need[name] for name, c in per.items()):
            held.update(group)
            for name, c in per.items():
                got[name] += c
    if sum(got.values()) < MIN_UNSEEN_EVAL:
        return None

    parts: dict[str, tuple[list[dict], list[dict]]] = {}
    for name, recs in datasets.items():
        free = [i for i in range(len(recs)) if not mentions[(name, i)]]
        share = got[name] / entity_count[name] if entity_count[name] else fraction
        order_free = list(free)
        random.Random(seed).shuffle(order_free)
        held_free = set(order_free[:round(len(free) * share)])
        eval_idx = {i for (n, i) in held if n == name} | held_free
        parts[name] = ([r for i, r in enumerate(recs) if i not in eval_idx], [r for i, r in enumerate(recs) if i in eval_idx])
    asked, total = sum(need.values()), sum(got.values())
    note = (f"{total} eval records with entities, none of whose mentions occurs in training"
            + (f" ({asked} asked; the rest share mentions with larger groups)" if total < asked else ""))
    return Split(parts, EvalSplit.UNSEEN_MENTION, note)


def split_eval(datasets: dict[str, list[dict]], fraction: float, seed: int, kind: EvalSplit) -> Split:
    """Each dataset's (train, eval) records: the unseen-mention split where asked and possible, else random."""
    if fraction > 0 and kind == EvalSplit.UNSEEN_MENTION:
        split = split_unseen(datasets, fraction, seed)
        if split is not None:
            return split
        note = (f"random split (an unseen-mention split holds fewer than {MIN_UNSEEN_EVAL} eval records with "
                "entities here); eval F1 is also reported on seen and unseen mentions apart")
    else:
        note = "random split"
    # each dataset on its own, so every dataset is represented in eval
    return Split({name: split_random(recs, fraction, seed) for name, recs in datasets.items()}, EvalSplit.RANDOM, note)
