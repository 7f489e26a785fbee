"""How one text's entity predictions are decoded: nested (gliner2's own, label by label) or flat.

gliner2 scores each entity label on its own, so one span can come back under two labels. Flat
decoding (GLiNER's `flat_ner=True`) keeps, among overlapping spans of any label, only the best:
`flat_entities` takes gliner2's entity payload with spans and confidences
(`{label: [{"text", "confidence", "start", "end"}, ...]}`, as `include_spans=True,
include_confidence=True` give it), optionally drops what is below per-label thresholds first, then
keeps spans greedily by confidence, skipping any that overlaps one already kept (character offsets,
end exclusive: touching spans do not overlap). Ties are broken by start, then end, then label name,
so the answer never depends on dict order. Items without offsets cannot be placed and are kept.

`resolve_decoding(records)` is `engine.ner_decoding: auto`: flat unless some record has two gold
mentions of different labels on overlapping spans (every occurrence of each mention string in the
input text counts). `plain_entities` turns a payload back into what gliner2 returns for other
`include_*` flags (without spans it lists each text once, case-insensitively, as gliner2 does).
Pure Python.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

FLAT, NESTED, AUTO = "flat", "nested", "auto"
DECODINGS = (FLAT, NESTED)


def _items(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _has_span(item: Any) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("start"), int) and isinstance(item.get("end"), int)


def _confidence(item: Any) -> float:
    conf = item.get("confidence") if isinstance(item, Mapping) else None
    return float(conf) if isinstance(conf, (int, float)) else 1.0


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two `[start, end)` character spans share a character."""
    return a[0] < b[1] and b[0] < a[1]


def apply_thresholds(entities: Mapping[str, Any], thresholds: Mapping[str, float] | None) -> dict[str, list]:
    """Each label's items with confidence ≥ its threshold (`thresholds[label]`, else `thresholds["default"]`,
    else all)."""
    thresholds = thresholds or {}
    out: dict[str, list] = {}
    for label, value in entities.items():
        t = thresholds.get(label, thresholds.get("default"))
        out[label] = [it for it in _items(value) if t is None or _confidence(it) >= t]
    return out


def flat_entities(entities: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The flat decoding of one text's `{label: items}` (see the module docstring); each label keeps its kept items
    in their original order, a label given one item (not a list) gets it or None."""
    filtered = apply_thresholds(entities, thresholds)
    candidates = [(-_confidence(it), it["start"], it["end"], label, i)
                  for label, items in filtered.items() for i, it in enumerate(items) if _has_span(it)]
    kept: set[tuple[str, int]] = set()
    taken: list[tuple[int, int]] = []
    for _, start, end, label, i in sorted(candidates):
        if not any(overlaps((start, end), span) for span in taken):
            taken.append((start, end))
            kept.add((label, i))
    out: dict[str, Any] = {}
    for label, items in filtered.items():
        survivors = [it for i, it in enumerate(items) if not _has_span(it) or (label, i) in kept]
        out[label] = survivors if isinstance(entities[label], list) else (survivors[0] if survivors else None)
    return out


def decode_entities(entities: Mapping[str, Any], decoding: str,
                    thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """`flat_entities` for `decoding == "flat"`, else the items over their thresholds (nested: gliner2's answer)."""
    if decoding == FLAT:
        return flat_entities(entities, thresholds)
    if thresholds:
        return {label: (kept if isinstance(entities[label], list) else (kept[0] if kept else None))
                for label, kept in apply_thresholds(entities, thresholds).items()}
    return dict(entities)


def plain_entities(entities: Mapping[str, Any], *, include_confidence: bool, include_spans: bool) -> dict[str, Any]:
    """A payload with spans and confidences as gliner2 gives it for the caller's own flags: the keys not asked for
    dropped, and without spans each text once per label (case-insensitive, first kept), a bare string without
    confidence either."""
    def strip(item: Any) -> Any:
        if not isinstance(item, Mapping):
            return item
        extras = {k: v for k, v in item.items() if k not in ("text", "confidence", "start", "end")}
        if not include_confidence and not include_spans and not extras:
            return item.get("text", "")
        out = {"text": item.get("text", "")}
        if include_confidence and "confidence" in item:
            out["confidence"] = item["confidence"]
        if include_spans and "start" in item:
            out.update(start=item["start"], end=item["end"])
        return {**out, **extras}

    result: dict[str, Any] = {}
    for label, value in entities.items():
        if not isinstance(value, list):
            result[label] = strip(value) if value is not None else None
            continue
        items, seen = [], set()
        for item in value:
            text = item.get("text", "") if isinstance(item, Mapping) else str(item)
            if not include_spans:
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
            items.append(strip(item))
        result[label] = items
    return result


def _occurrences(text: str, mention: str) -> list[tuple[int, int]]:
    out, start = [], text.find(mention)
    while mention and start >= 0:
        out.append((start, start + len(mention)))
        start = text.find(mention, start + 1)
    return out


def has_cross_label_overlap(text: str, entities: Mapping[str, Any]) -> bool:
    """Whether two gold mentions of different labels overlap in `text` (every occurrence of each mention string)."""
    spans: list[tuple[int, int, str]] = []
    for label, value in entities.items():
        for item in _items(value):
            mention = item.get("text") if isinstance(item, Mapping) else item
            if isinstance(mention, str) and mention.strip():
                spans.extend((s, e, label) for s, e in _occurrences(text, mention.strip()))
    spans.sort()
    for i, (s, e, label) in enumerate(spans):
        for s2, e2, label2 in spans[i + 1:]:
            if s2 >= e:
                break
            if label2 != label:
                return True
    return False


def resolve_decoding(setting: str, records: Iterable[Mapping[str, Any]]) -> str:
    """`flat` or `nested` for `engine.ner_decoding` (`auto`: nested only where some gliner2-format record has two
    gold mentions of different labels on overlapping spans)."""
    setting = getattr(setting, "value", setting)
    if setting in DECODINGS:
        return setting
    for rec in records:
        output = rec.get("output") or {}
        ents = output.get("entities") if isinstance(output, Mapping) else None
        if isinstance(ents, Mapping) and isinstance(rec.get("input"), str) and has_cross_label_overlap(rec["input"], ents):
            return NESTED
    return FLAT
