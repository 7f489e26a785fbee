"""Exact-match entity scoring shared by the GLiNER2 trainers and `scripts/eval_gliner.py`.

Pure Python (no torch). A record is a mapping ``label -> mentions`` — the
``output["entities"]`` of a gliner2-format JSONL line, or what
``GLiNER2.batch_extract_entities`` returns under ``"entities"``. Mentions may be
strings, ``{"text": ...}`` dicts (``include_confidence``/``include_spans``
payloads), a bare string or ``None`` (scalar entity dtypes).

Matching is exact on the mention text: per record and per label, the gold and
predicted mentions are compared as multisets (so a name mentioned twice must be
predicted twice to score two true positives). Text is compared case-sensitively
after whitespace normalisation (runs of whitespace collapse to one space, ends
are stripped); empty mentions are ignored.

Undefined ratios (0/0) are reported as 0.0, matching `zero_division=0` in
scikit-learn and seqeval.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["normalize_mention", "mentions_of", "prf", "score_entities"]


def normalize_mention(text: str) -> str:
    """Collapse runs of whitespace to a single space and strip the ends."""
    return " ".join(str(text).split())


def mentions_of(value: Any) -> list[str]:
    """The normalised, non-empty mention texts in one label's value."""
    if value is None:
        return []
    if isinstance(value, (str, Mapping)):
        value = [value]
    out: list[str] = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, Mapping):
            item = item.get("text")
            if item is None:
                continue
        elif isinstance(item, (tuple, list)):  # raw (text, confidence, start, end) spans
            if not item:
                continue
            item = item[0]
        text = normalize_mention(item)
        if text:
            out.append(text)
    return out


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """Precision, recall, F1 and the counts they come from."""
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "predicted": tp + fp,
    }


def _as_entities(record: Any) -> Mapping[str, Any]:
    """Accept a bare label map, or a gliner2 record/result holding one under ``entities``."""
    if record is None:
        return {}
    if not isinstance(record, Mapping):
        raise TypeError(f"expected a mapping label -> mentions, got {type(record).__name__}")
    if "output" in record and isinstance(record["output"], Mapping):
        record = record["output"]
    if "entities" in record and isinstance(record["entities"], Mapping):
        record = record["entities"]
    return record


def score_entities(
    gold: Sequence[Mapping[str, Any]],
    pred: Sequence[Mapping[str, Any]],
    labels: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Score predicted entities against gold, record by record.

    Args:
        gold: one ``{label: [mention, ...]}`` map per record.
        pred: the predictions for the same records, in the same order.
        labels: the label set to score; default the union of the labels that
            appear (as keys) in gold or pred. Mentions of other labels are ignored.

    Returns:
        ``{"micro": {precision, recall, f1, tp, fp, fn, support, predicted},
        "macro": {precision, recall, f1} (unweighted mean over labels),
        "per_label": {label: {...same keys as micro...}},
        "labels": [sorted labels], "records": n}``
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} records but pred has {len(pred)}")

    gold_maps = [_as_entities(g) for g in gold]
    pred_maps = [_as_entities(p) for p in pred]

    if labels is None:
        label_set: set[str] = set()
        for m in gold_maps:
            label_set.update(m.keys())
        for m in pred_maps:
            label_set.update(m.keys())
    else:
        label_set = set(labels)
    label_list = sorted(label_set)

    counts = {label: [0, 0, 0] for label in label_list}  # tp, fp, fn
    for g, p in zip(gold_maps, pred_maps):
        for label in label_list:
            g_counter = Counter(mentions_of(g.get(label)))
            p_counter = Counter(mentions_of(p.get(label)))
            tp = sum((g_counter & p_counter).values())
            c = counts[label]
            c[0] += tp
            c[1] += sum(p_counter.values()) - tp
            c[2] += sum(g_counter.values()) - tp

    per_label = {label: prf(*counts[label]) for label in label_list}
    tp = sum(c[0] for c in counts.values())
    fp = sum(c[1] for c in counts.values())
    fn = sum(c[2] for c in counts.values())
    n = len(label_list)
    macro = {
        key: (sum(per_label[lab][key] for lab in label_list) / n if n else 0.0)
        for key in ("precision", "recall", "f1")
    }
    return {
        "micro": prf(tp, fp, fn),
        "macro": macro,
        "per_label": per_label,
        "labels": label_list,
        "records": len(gold_maps),
    }
