"""Decision thresholds for a trained GLiNER2 model, chosen on the eval split and saved with it.

`calibrate(model, records, ...)` asks the model once for the eval records' entities at the lowest
threshold of the grid with their confidences (`entity_confidences`); a mention predicted at
threshold t is one of those with confidence ≥ t (gliner2 keeps the best-scoring of overlapping
spans first, so filtering the low-threshold answer is the answer at t; with flat decoding
(`felix_train.ner_decoding`) the spans kept at t are decoded again, so calibration scores what eval
and serving return). `choose_thresholds` then picks:

- the global threshold: the grid value (0.05, 0.10, ..., 0.95) with the best entity micro-F1 on
  the eval records (ties: the one nearest 0.5);
- per-label thresholds (`RULE`): a label keeps the global one unless its own best grid value beats
  the label's F1 at the global one by `LABEL_MARGIN` and it has at least `LABEL_MIN_SUPPORT` gold
  mentions in eval (a small label's best threshold is mostly noise); if the per-label set ends
  below the global one on micro-F1, none is kept.

So the calibrated micro-F1 is never below the F1 at 0.5 on the eval records. The result goes into
`felix_model.json` (`thresholds: {"default": t, "<label>": t}` by dataset label, and
`thresholds_chosen`: how) and the job's metrics (`eval_f1_at_0.5`, `eval_f1_calibrated`,
`threshold`). Pure Python but for the model call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from felix_train.metrics_ner import mentions_of, normalize_mention, prf
from felix_train.ner_decoding import FLAT, NESTED, flat_entities

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
LABEL_MARGIN = 0.02  # a label's own threshold must beat its F1 at the global one by this much
LABEL_MIN_SUPPORT = 10  # gold mentions a label needs in eval before it gets its own threshold
RULE = (f"global: the grid threshold with the best eval micro-F1 (ties nearest 0.5); per label: its best grid "
        f"threshold where that beats its F1 at the global one by >= {LABEL_MARGIN} with >= {LABEL_MIN_SUPPORT} "
        "gold mentions, kept only if micro-F1 does not drop")


@dataclass
class Calibration:
    default: float
    per_label: dict[str, float]
    f1_at_half: float
    f1_global: float
    f1_calibrated: float
    label_f1: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> {at_0.5, calibrated}

    def thresholds(self) -> dict[str, float]:
        return {"default": self.default, **self.per_label}

    def chosen(self, records: int) -> dict:
        return {"rule": RULE, "grid": [GRID[0], GRID[-1], 0.05], "eval_records": records,
                "eval_f1_at_0.5": self.f1_at_half, "eval_f1_global": self.f1_global,
                "eval_f1_calibrated": self.f1_calibrated, "per_label": self.label_f1}


def entity_confidences(model, records: list[dict], *, batch_size: int, max_len: int | None,
                       label_names: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(gold `{label: [mention]}`, predicted `{label: [(mention, confidence, start, end)]}`) per entity record, at
    the lowest grid threshold, under the dataset's labels (`label_names`: prompt name -> dataset label)."""
    from felix_train.trainers.gliner2.eval import _eval_schema

    ents = [r for r in records if isinstance(r["output"].get("entities"), dict)]
    schemas = [_eval_schema(r["output"]) for r in ents]
    preds = model.batch_extract([r["input"] for r in ents], schemas, batch_size=batch_size, threshold=GRID[0],
                                include_confidence=True, include_spans=True, max_len=max_len)
    gold, scored = [], []
    for rec, schema, pred in zip(ents, schemas, preds):
        got = (pred or {}).get("entities") or {}
        gold.append({label_names.get(k, k): mentions_of(v) for k, v in rec["output"]["entities"].items()})
        scored.append({label_names.get(k, k): [(normalize_mention(m["text"]), float(m["confidence"]),
                                                m.get("start"), m.get("end"))
                                               for m in _items(got.get(k)) if normalize_mention(m["text"])]
                       for k in schema["entities"]})
    return gold, scored


def _items(value) -> list[dict]:
    if value is None:
        return []
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict) and v.get("text")]


def _predicted(p_map: dict, choice: dict[str, float], decoding: str) -> dict[str, Counter]:
    """The mention texts predicted per label under the thresholds `choice` (and flat decoding where asked)."""
    if decoding == FLAT:
        items = {label: [{"text": p[0], "confidence": p[1], **({"start": p[2], "end": p[3]} if len(p) > 3 else {})}
                         for p in preds] for label, preds in p_map.items()}
        kept = flat_entities(items, {"default": 1.0, **{k: v for k, v in choice.items() if k in items}})
        return {label: Counter(it["text"] for it in kept[label]) for label in kept}
    return {label: Counter(p[0] for p in preds if p[1] >= choice[label]) for label, preds in p_map.items()
            if label in choice}


def _counts(gold: list[dict], scored: list[dict], labels: list[str], choice: dict[str, float],
            decoding: str) -> dict[str, list[int]]:
    """label -> [tp, fp, fn] over the records under the thresholds `choice`."""
    out = {label: [0, 0, 0] for label in labels}
    for g_map, p_map in zip(gold, scored):
        got = _predicted(p_map, choice, decoding)
        for label in labels:
            g, p = Counter(g_map.get(label) or []), got.get(label) or Counter()
            tp = sum((g & p).values())
            c = out[label]
            c[0] += tp
            c[1] += sum(p.values()) - tp
            c[2] += sum(g.values()) - tp
    return out


def _micro(counts: dict[str, list[int]]) -> float:
    return prf(*(sum(c[i] for c in counts.values()) for i in range(3)))["f1"]


def choose_thresholds(gold: list[dict], scored: list[dict], decoding: str = NESTED) -> Calibration | None:
    """The global and per-label thresholds (see the module docstring); None without any gold mention. Predictions are
    `(mention, confidence)`, or `(mention, confidence, start, end)` for flat decoding (which decodes after the
    thresholds, so a label's threshold is tried with every other label at the global one)."""
    labels = sorted({label for g in gold for label in g} | {label for p in scored for label in p})
    at = {t: _counts(gold, scored, labels, dict.fromkeys(labels, t), decoding) for t in GRID}
    if not labels or not sum(at[GRID[0]][label][0] + at[GRID[0]][label][2] for label in labels):
        return None
    micro = {t: _micro(at[t]) for t in GRID}
    best = max(GRID, key=lambda t: (micro[t], -abs(t - 0.5)))
    per_label: dict[str, float] = {}
    label_f1: dict[str, dict[str, float]] = {}
    for label in labels:
        if decoding == FLAT:  # the label's threshold moves, the others stay at the global one
            own_counts = {t: _counts(gold, scored, labels, {**dict.fromkeys(labels, best), label: t}, decoding)[label]
                          for t in GRID}
        else:
            own_counts = {t: at[t][label] for t in GRID}
        f1 = {t: prf(*own_counts[t])["f1"] for t in GRID}
        own = max(GRID, key=lambda t: (f1[t], -abs(t - best)))
        support = own_counts[best][0] + own_counts[best][2]
        if f1[own] >= f1[best] + LABEL_MARGIN and support >= LABEL_MIN_SUPPORT:
            per_label[label] = own
        label_f1[label] = {"at_0.5": prf(*at[0.5][label])["f1"], "calibrated": f1[per_label.get(label, best)],
                           "threshold": per_label.get(label, best), "support": support}
    choice = {label: per_label.get(label, best) for label in labels}
    final = _counts(gold, scored, labels, choice, decoding)
    calibrated = _micro(final)
    if calibrated < micro[best]:
        per_label, calibrated, final = {}, micro[best], at[best]
        for label in labels:
            label_f1[label]["threshold"] = best
    for label in labels:
        label_f1[label]["calibrated"] = prf(*final[label])["f1"]
    return Calibration(default=best, per_label=per_label, f1_at_half=micro[0.5], f1_global=micro[best],
                       f1_calibrated=calibrated, label_f1=label_f1)


def calibrate(model, records: list[dict], *, batch_size: int, max_len: int | None,
              label_names: dict[str, str], decoding: str = NESTED) -> Calibration | None:
    """Thresholds for `model` chosen on `records` (the eval split) under `decoding`; None without entity records or
    mentions."""
    gold, scored = entity_confidences(model, records, batch_size=batch_size, max_len=max_len, label_names=label_names)
    return choose_thresholds(gold, scored, decoding) if gold else None
