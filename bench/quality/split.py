"""An unseen-mention split of a gliner2-format NER file: no test mention is a training mention.

WNUT-17's test set is made of entities that never occur in training; a random split of the training file
shares surface forms between its parts and rewards memorising names. This split mimics the real test:

1. Mentions are normalised (whitespace collapsed, case folded); records that share a normalised mention
   are joined (union-find), so each group holds every record naming any of its mentions.
2. The groups, in a seeded order, go whole to the test side while they fit, until about `test_share`
   of the entity-bearing records are there; a group too big to fit stays in training.
3. Entity-free records are split in the same proportion (seeded).

Deterministic: the same file, share and seed give the same parts. Both parts keep the file's order.
Standard library only.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path


def normalise(mention: str) -> str:
    return " ".join(str(mention).split()).casefold()


def record_mentions(record: dict) -> set[str]:
    """The normalised mentions of a record, over all labels."""
    entities = (record.get("output") or {}).get("entities") or {}
    return {normalise(m) for mentions in entities.values() for m in (mentions or []) if normalise(m)}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Split:
    """The two parts as record indices into the source file, and the figures that describe them."""

    train: list[int]
    test: list[int]
    stats: dict = field(default_factory=dict)


def unseen_mention_split(records: list[dict], *, test_share: float = 0.2, seed: int = 0) -> Split:
    """Split `records` so that no normalised test mention is a training mention (see the module docstring)."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    mentions = [record_mentions(r) for r in records]
    bearing = [i for i, m in enumerate(mentions) if m]
    free = [i for i, m in enumerate(mentions) if not m]
    uf = _UnionFind(len(records))
    first: dict[str, int] = {}
    for i in bearing:
        for m in mentions[i]:
            uf.union(first.setdefault(m, i), i)
    groups: dict[int, list[int]] = {}
    for i in bearing:
        groups.setdefault(uf.find(i), []).append(i)
    order = sorted(groups.values(), key=lambda g: g[0])
    random.Random(seed).shuffle(order)
    target = round(test_share * len(bearing))
    test: list[int] = []
    for group in order:
        if len(test) >= target:
            break
        if len(test) + len(group) <= target:
            test.extend(group)
    share = len(test) / len(bearing) if bearing else test_share
    shuffled_free = sorted(free)
    random.Random(seed + 1).shuffle(shuffled_free)
    test.extend(shuffled_free[:round(share * len(free))])
    test_set = set(test)
    train = [i for i in range(len(records)) if i not in test_set]
    return Split(train=train, test=sorted(test), stats=describe(records, train, sorted(test), mentions,
                                                                   groups=len(groups),
                                                                   largest_group=max(map(len, groups.values()), default=0)))


def describe(records: list[dict], train: list[int], test: list[int], mentions: list[set[str]], **extra) -> dict:
    """Counts per part, and the checks: test mentions that are training mentions (must be 0) and test mentions
    whose text occurs anywhere in a training sentence (informational: an unlabelled or entity-free occurrence)."""
    train_mentions = set().union(*(mentions[i] for i in train)) if train else set()
    test_mentions = set().union(*(mentions[i] for i in test)) if test else set()
    train_text = "\n".join(f" {normalise(records[i].get('input', ''))} " for i in train)
    in_text = sorted(m for m in test_mentions if f" {m} " in train_text)

    def count(part: list[int]) -> dict:
        ents = [sum(len(v or []) for v in ((records[i].get("output") or {}).get("entities") or {}).values())
                for i in part]
        return {"records": len(part), "with_entities": sum(1 for n in ents if n), "mentions": sum(ents),
                "distinct_mentions": len(set().union(*(mentions[i] for i in part)) if part else set())}

    return {"train": count(train), "test": count(test), **extra,
            "test_mentions_in_train_mentions": len(test_mentions & train_mentions),
            "test_mentions_in_train_text": len(in_text), "test_mentions_in_train_text_examples": in_text[:10]}


def sample(indices: list[int], limit: int | None, seed: int) -> list[int]:
    """At most `limit` of `indices` (a seeded sample, in file order)."""
    if limit is None or limit >= len(indices):
        return list(indices)
    return sorted(random.Random(seed).sample(indices, limit))


def read_records(path: Path) -> list[dict]:
    from felix_train.jsonl import read_jsonl

    return [record for _, record in read_jsonl(path)]


def write_records(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_split(source: Path, out_dir: Path, *, test_share: float = 0.2, seed: int = 0,
                train_limit: int | None = None, test_limit: int | None = None) -> dict:
    """Split `source` into `out_dir/{train,test}.jsonl`; the split's figures and the two paths.

    `train_limit` / `test_limit` keep a seeded sample of each part (the `--quick` budget); the check that no
    test mention is a training mention is made on what is written.
    """
    records = read_records(source)
    split = unseen_mention_split(records, test_share=test_share, seed=seed)
    train, test = sample(split.train, train_limit, seed), sample(split.test, test_limit, seed)
    stats = split.stats if (train, test) == (split.train, split.test) else \
        describe(records, train, test, [record_mentions(r) for r in records],
                 groups=split.stats["groups"], largest_group=split.stats["largest_group"], full_split=split.stats)
    if stats["test_mentions_in_train_mentions"]:
        raise RuntimeError(f"the unseen-mention split of {source} leaks {stats['test_mentions_in_train_mentions']} "
                             "test mentions into training")
    return {"source": str(source), "test_share": test_share, "seed": seed, **stats,
            "train_path": str(write_records(out_dir / "train.jsonl", [records[i] for i in train])),
            "test_path": str(write_records(out_dir / "test.jsonl", [records[i] for i in test]))}
