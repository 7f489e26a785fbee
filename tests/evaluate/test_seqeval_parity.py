"""felix's NER scorer against `seqeval` on real WNUT-17 records: the same TP/FP/FN and P/R/F1, per label and micro.

felix scores mention texts per record and label (multisets, exact match); seqeval scores BIO chunks by
position. The two agree whenever text and position say the same thing, which holds on the records kept
here: every gold mention is a run of whole tokens, each mention text occurs in its sentence exactly as
often as it is listed, under one label, and no two spans overlap (gold or predicted). Predictions are a
perturbed copy of gold (dropped, shifted, widened, relabelled spans, and spurious ones), so every kind of
error shows up. Skipped when `../shared/data` is absent.
"""

from __future__ import annotations

import json
import random

import pytest

from felix_train.metrics_ner import score_entities

seqeval_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")


def _occurrences(tokens: list[str], mention: list[str]) -> list[int]:
    n = len(mention)
    return [i for i in range(len(tokens) - n + 1) if tokens[i:i + n] == mention]


def _overlaps(span: tuple[int, int, str], spans: list[tuple[int, int, str]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e, _ in spans)


def bio_convertible(record: dict) -> tuple[list[str], list[tuple[int, int, str]]] | None:
    """(tokens, gold spans [start, end) with labels) when text and position agree on the record, else None."""
    tokens = record["input"].split()
    listed: dict[str, list[str]] = {}
    for label, mentions in record["output"]["entities"].items():
        for mention in mentions:
            listed.setdefault(" ".join(mention.split()), []).append(label)
    spans: list[tuple[int, int, str]] = []
    for text, labels in listed.items():
        starts = _occurrences(tokens, text.split())
        if len(set(labels)) != 1 or len(starts) != len(labels):
            return None
        for start in starts:
            span = (start, start + len(text.split()), labels[0])
            if _overlaps(span, spans):
                return None
            spans.append(span)
    return tokens, sorted(spans)


def perturb(tokens: list[str], gold: list[tuple[int, int, str]], labels: list[str],
            rng: random.Random) -> list[tuple[int, int, str]]:
    """A prediction: each gold span kept, dropped, shifted, widened or relabelled; plus spurious spans."""
    pred: list[tuple[int, int, str]] = []
    for start, end, label in gold:
        roll = rng.random()
        if roll < 0.15:
            continue
        if roll < 0.3:
            span = (start + 1, end + 1, label) if end < len(tokens) else (start - 1, end - 1, label)
        elif roll < 0.4:
            span = (start, min(end + 1, len(tokens)), label) if end < len(tokens) else (start - 1, end, label)
        elif roll < 0.55:
            span = (start, end, rng.choice([lab for lab in labels if lab != label]))
        else:
            span = (start, end, label)
        if span[0] >= 0 and not _overlaps(span, pred):
            pred.append(span)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        start = rng.randrange(len(tokens))
        span = (start, min(len(tokens), start + rng.choice([1, 1, 2])), rng.choice(labels))
        if not _overlaps(span, pred):
            pred.append(span)
    return sorted(pred)


def bio(length: int, spans: list[tuple[int, int, str]]) -> list[str]:
    tags = ["O"] * length
    for start, end, label in spans:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def mentions(tokens: list[str], spans: list[tuple[int, int, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for start, end, label in spans:
        out.setdefault(label, []).append(" ".join(tokens[start:end]))
    return out


def test_felix_and_seqeval_count_the_same_on_wnut17(shared_data):
    path = shared_data / "ner" / "wnut17_train.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = sorted({lab for r in records for lab in r["output"]["entities"]})
    rng = random.Random(17)
    gold_maps, pred_maps, gold_tags, pred_tags = [], [], [], []
    for record in records:
        converted = bio_convertible(record)
        if converted is None:
            continue
        tokens, gold = converted
        pred = perturb(tokens, gold, labels, rng)
        gold_maps.append(record["output"]["entities"])  # the file's own mentions, as the trainer scores them
        pred_maps.append(mentions(tokens, pred))
        gold_tags.append(bio(len(tokens), gold))
        pred_tags.append(bio(len(tokens), pred))
    assert len(gold_maps) > 0.9 * len(records)
    assert sum(1 for g in gold_maps if any(g.values())) > 500

    felix = score_entities(gold_maps, pred_maps, labels=labels)

    counts = {label: [0, 0, 0] for label in labels}  # seqeval's own chunks: tp, fp, fn
    true_chunks = set(seqeval_labeling.get_entities(gold_tags))
    pred_chunks = set(seqeval_labeling.get_entities(pred_tags))
    for label, *_ in true_chunks & pred_chunks:
        counts[label][0] += 1
    for label, *_ in pred_chunks - true_chunks:
        counts[label][1] += 1
    for label, *_ in true_chunks - pred_chunks:
        counts[label][2] += 1
    for label in labels:
        ours = felix["per_label"][label]
        assert (ours["tp"], ours["fp"], ours["fn"]) == tuple(counts[label]), label
    micro = felix["micro"]
    assert (micro["tp"], micro["fp"], micro["fn"]) == tuple(map(sum, zip(*counts.values())))
    assert micro["fp"] > 50 and micro["fn"] > 50 and micro["tp"] > 400  # every kind of error was exercised

    report = seqeval_labeling.classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
    for label in labels:
        for key, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                            ("support", "support")):
            assert felix["per_label"][label][key] == pytest.approx(report[label][theirs]), (label, key)
    for key, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
        assert micro[key] == pytest.approx(report["micro avg"][theirs]), key
