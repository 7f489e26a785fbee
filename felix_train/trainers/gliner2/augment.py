"""Mention replacement (`engine.mention_replacement`): each epoch, training mentions swapped for others of their label.

Dai & Adel (COLING 2020, "An Analysis of Simple Data Augmentation for Named Entity Recognition"): replacing a
mention by another mention of the same type from the training set keeps the sentence's context and its labels,
and teaches the model to find entities by context rather than by remembering names: what an entity never
seen in training needs. Here each epoch draws anew, with p = `engine.mention_replacement` per distinct mention
of a record, from a seeded `random.Random(seed, epoch, record)`, so a resumed epoch draws what the
uninterrupted run drew.

Only plain entity records are changed (string mentions, no relation, classification or structure that could
name a mention), and a record is left as it is where a swap could be ambiguous: a mention listed under two
labels, mentions inside one another, a mention not found as whole words in the text, a replacement already in
the text. Pure Python.
"""

from __future__ import annotations

import random
import re

from felix_train.trainers.gliner2.data import entity_only


def plain_entity_record(record: dict) -> bool:
    """An entity-only record (`data.entity_only`) with at least one mention, every mention a string."""
    ents = entity_only(record)
    return bool(ents) and any(ents.values()) and all(
        isinstance(m, str) and m.strip() for mentions in ents.values() for m in mentions)


def mention_pool(records: list[dict]) -> dict[str, list[str]]:
    """{label: its distinct mentions in `records`, sorted}: what a mention of that label may become."""
    pool: dict[str, set[str]] = {}
    for rec in records:
        if plain_entity_record(rec):
            for label, mentions in rec["output"]["entities"].items():
                pool.setdefault(label, set()).update(mentions)
    return {label: sorted(found) for label, found in pool.items()}


def _words(mention: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(mention)}(?!\w)")


def _nested(names: list[str]) -> bool:
    return any(a != b and a in b for a in names for b in names)


def replace_mentions(record: dict, pool: dict[str, list[str]], p: float, rng: random.Random) -> dict:
    """A copy of `record` with each distinct mention, with probability `p`, replaced in the text and in its label's
    list by another mention of the label from `pool`; `record` itself where nothing is replaced."""
    if p <= 0 or not plain_entity_record(record):
        return record
    text, ents = record["input"], record["output"]["entities"]
    label_of: dict[str, str] = {}
    for label, mentions in ents.items():
        for m in mentions:
            if label_of.setdefault(m, label) != label:
                return record  # one mention under two labels
    names = list(label_of)
    if _nested(names):
        return record
    swap: dict[str, str] = {}
    for m in names:  # one draw per mention, in the record's order, whether or not it can be swapped
        if rng.random() >= p:
            continue
        choices = pool.get(label_of[m]) or [m]
        pick = rng.randrange(len(choices))
        new = choices[pick] if choices[pick] != m else choices[(pick + 1) % len(choices)]  # another one where any
        kept = [n for n in names if n not in swap and n != m] + list(swap.values())
        if new == m or new in text or _nested(kept + [new]) or not _words(m).search(text):
            continue
        swap[m] = new
    if not swap:
        return record
    pattern = re.compile("|".join(_words(m).pattern for m in sorted(swap, key=len, reverse=True)))
    new_text = pattern.sub(lambda found: swap[found.group(0)], text)
    new_ents = {label: [swap.get(m, m) for m in mentions] for label, mentions in ents.items()}
    return {**record, "input": new_text, "output": {**record["output"], "entities": new_ents}}
