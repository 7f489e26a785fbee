"""Evaluation of a GLiNER2 model: eval loss and exact-match precision/recall/F1 of its own extraction.

`extraction_metrics(model, records)` asks the model (`batch_extract`, threshold 0.5) for the
tasks and labels of each gold record (`_eval_schema`: entity types in sorted order, whatever
order training used), decodes its entities as the job does (`data.decoding`: flat or nested) and scores what it returns against gold, per label and micro: entity
mentions by exact normalised text per record and label (multisets, `felix_train.metrics_ner`),
classifications by label, relations by (head, tail), structures by (field, value).
Where the eval records hold mentions training saw and mentions it did not (a random split, or
an eval dataset), entity F1 is also reported on each kind (`eval_f1_seen`, `eval_f1_unseen`).
`evaluate(trainer)` adds the eval loss per record (gliner2 sums its loss over a batch). Every
rank of a distributed run evaluates the whole eval set alike: no collectives, the same metrics.
Pure Python at import (torch loads inside `evaluate`).
"""

from __future__ import annotations

from typing import Any

from felix_train.metrics_ner import mentions_of, normalize_mention, prf, score_entities
from felix_train.ner_decoding import FLAT, NESTED, flat_entities
from felix_train.trainers.gliner2.split import mention_key

EVAL_THRESHOLD = 0.5


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("text", value.get("value"))
    if value is None:
        return None
    value = normalize_mention(value)
    return value or None


def _values(value: Any) -> list[str]:
    if isinstance(value, dict) and "value" in value and "choices" in value:
        value = value["value"]
    if isinstance(value, (list, tuple)):
        return [t for v in value if (t := _text(v))]
    t = _text(value)
    return [t] if t else []


def _eval_schema(output: dict) -> dict:
    """The extraction schema of a gold record: its tasks and labels, without the answers."""
    schema: dict[str, Any] = {}
    if isinstance(output.get("entities"), dict):
        # sorted, not the training order: a score that needs the labels in one order would hide a model
        # that learnt positions instead of label names (and scripts/eval_gliner.py sorts them too)
        schema["entities"] = {label: "" for label in sorted(output["entities"])}
        if output.get("entity_descriptions"):
            schema["entity_descriptions"] = dict(output["entity_descriptions"])
    if output.get("classifications"):
        schema["classifications"] = [
            {k: v for k, v in c.items() if k not in ("true_label",)} | {"multi_label": bool(c.get("multi_label", False))}
            for c in output["classifications"]
        ]
    rels = [r for r in output.get("relations") or [] for name, f in r.items() if set(f) == {"head", "tail"}]
    if rels:
        names = list(dict.fromkeys(name for r in rels for name in r))
        schema["relations"] = [{name: {"head": "", "tail": ""}} for name in names]
    if output.get("json_structures"):
        structs: dict[str, dict] = {}
        for item in output["json_structures"]:
            for name, fields in item.items():
                target = structs.setdefault(name, {})
                for fname, fval in fields.items():
                    if isinstance(fval, dict) and "choices" in fval:
                        target[fname] = {"value": "", "choices": list(fval["choices"])}
                    else:
                        target.setdefault(fname, "")
        schema["json_structures"] = [{name: fields} for name, fields in structs.items()]
    return schema


def _gold_items(output: dict) -> dict[str, list]:
    """Non-entity gold facts, keyed by metric label: classification task, relation or structure name."""
    items: dict[str, list] = {}
    for c in output.get("classifications") or []:
        true = c.get("true_label")
        for t in true if isinstance(true, list) else [true]:
            if t is not None:
                items.setdefault(f"classification:{c['task']}", []).append(str(t))
    for r in output.get("relations") or []:
        for name, f in r.items():
            if set(f) == {"head", "tail"} and _text(f["head"]) and _text(f["tail"]):
                items.setdefault(f"relation:{name}", []).append((_text(f["head"]), _text(f["tail"])))
    for s in output.get("json_structures") or []:
        for name, fields in s.items():
            for fname, fval in fields.items():
                for v in _values(fval):
                    items.setdefault(f"structure:{name}", []).append((fname, v))
    return items


def _pred_items(schema: dict, pred: dict) -> dict[str, list]:
    items: dict[str, list] = {}
    for c in schema.get("classifications") or []:
        got = pred.get(c["task"])
        got = got if isinstance(got, list) else [got]
        for g in got:
            label = g[0] if isinstance(g, (tuple, list)) else (g.get("label") if isinstance(g, dict) else g)
            if label is not None:
                items.setdefault(f"classification:{c['task']}", []).append(str(label))
    for r in schema.get("relations") or []:
        for name in r:
            for inst in (pred.get("relation_extraction") or {}).get(name) or []:
                head, tail = (inst.get("head"), inst.get("tail")) if isinstance(inst, dict) else inst
                if _text(head) and _text(tail):
                    items.setdefault(f"relation:{name}", []).append((_text(head), _text(tail)))
    for s in schema.get("json_structures") or []:
        for name in s:
            for inst in pred.get(name) or []:
                if isinstance(inst, dict):
                    for fname, fval in inst.items():
                        for v in _values(fval):
                            items.setdefault(f"structure:{name}", []).append((fname, v))
    return items


def _split_by_seen(maps: list[dict], seen: frozenset[str], want: bool) -> list[dict]:
    """The mentions of each `{label: mentions}` map whose surface form training saw (`want`) or did not."""
    return [{label: [m for m in mentions_of(v) if (mention_key(m) in seen) == want] for label, v in mp.items()}
            for mp in maps]


def seen_unseen_metrics(gold: list[dict], pred: list[dict], labels: list[str], seen: frozenset[str]) -> dict[str, float]:
    """Entity micro P/R/F1 on the mentions whose surface form occurs in training (`_seen`) and on the others
    (`_unseen`), gold and predicted alike; {} unless the gold holds both kinds."""
    out: dict[str, float] = {}
    for suffix, want in (("seen", True), ("unseen", False)):
        m = score_entities(_split_by_seen(gold, seen, want), _split_by_seen(pred, seen, want), labels=labels)["micro"]
        if not m["support"]:
            return {}
        out.update({f"eval_f1_{suffix}": m["f1"], f"eval_precision_{suffix}": m["precision"],
                    f"eval_recall_{suffix}": m["recall"], f"eval_support_{suffix}": m["support"]})
    return out


def extraction_metrics(model, records: list[dict], *, batch_size: int, max_len: int | None = None,
                       label_names: dict[str, str] | None = None,
                       seen_mentions: frozenset[str] | None = None, decoding: str = NESTED) -> dict[str, float]:
    """Micro and per-label precision/recall/F1 of `model.batch_extract` against gold (exact match).

    Entities are matched as multisets of normalised mention text per record and label
    (`felix_train.metrics_ner`); classifications by label, relations by (head, tail)
    text, structures by (field, value) text. Threshold 0.5. `label_names` maps the entity
    labels the model was asked (prompt names) back to the dataset's for the per-label figures;
    with `seen_mentions` (the training mentions) entity F1 on seen and unseen mentions is added
    where the gold holds both (`seen_unseen_metrics`). `decoding="flat"` keeps the best of overlapping entity spans
    across labels (`felix_train.ner_decoding`; the spans and confidences it needs are asked for).
    """
    from collections import Counter

    if not records:
        return {}
    schemas = [_eval_schema(r["output"]) for r in records]
    texts = [r["input"] for r in records]
    flat = decoding == FLAT
    preds = model.batch_extract(texts, schemas, batch_size=batch_size, threshold=EVAL_THRESHOLD, max_len=max_len,
                                **({"include_spans": True, "include_confidence": True} if flat else {}))
    if flat:
        preds = [{**p, "entities": flat_entities(p["entities"])} if isinstance((p or {}).get("entities"), dict) else p
                 for p in preds]

    counts: dict[str, list[int]] = {}
    extra: dict[str, float] = {}
    ent_idx = [i for i, s in enumerate(schemas) if "entities" in s]
    if ent_idx:
        names = label_names or {}
        gold = [records[i]["output"]["entities"] for i in ent_idx]
        pred = [preds[i].get("entities") or {} for i in ent_idx]
        labels = sorted({lab for i in ent_idx for lab in schemas[i]["entities"]})
        scored = score_entities(gold, pred, labels=labels)
        for label, m in scored["per_label"].items():
            counts[names.get(label, label)] = [m["tp"], m["fp"], m["fn"]]
        if seen_mentions is not None:
            extra = seen_unseen_metrics(gold, pred, labels, seen_mentions)
    for rec, schema, pred in zip(records, schemas, preds):
        gold_items, pred_items = _gold_items(rec["output"]), _pred_items(schema, pred)
        for key in set(gold_items) | set(pred_items):
            g, p = Counter(gold_items.get(key, [])), Counter(pred_items.get(key, []))
            tp = sum((g & p).values())
            c = counts.setdefault(key, [0, 0, 0])
            c[0] += tp
            c[1] += sum(p.values()) - tp
            c[2] += sum(g.values()) - tp

    out: dict[str, float] = {}
    micro = prf(*(sum(c[i] for c in counts.values()) for i in range(3)))
    out.update(eval_precision=micro["precision"], eval_recall=micro["recall"], eval_f1=micro["f1"],
               eval_support=micro["support"])
    for label in sorted(counts):
        m = prf(*counts[label])
        out[f"eval_f1/{label}"] = m["f1"]
        out[f"eval_precision/{label}"] = m["precision"]
        out[f"eval_recall/{label}"] = m["recall"]
    out.update(extra)
    return out


def evaluate(trainer) -> dict[str, float]:
    """Eval loss (per record) and extraction P/R/F1 of `trainer`'s model on its eval records; {} without any."""
    import torch

    records = trainer.data.eval
    if not records:
        return {}
    model = trainer.unwrapped  # every rank evaluates the whole eval set alike: no collectives, the same metrics
    was_training = model.training
    model.eval()
    trainer.processor.change_mode(is_training=False)
    bs = trainer.config.eval_batch_size
    use_amp = trainer.config.fp16 or trainer.config.bf16
    amp_dtype = torch.bfloat16 if trainer.config.bf16 else torch.float16
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(records), bs):
                chunk = records[i:i + bs]
                batch = trainer.eval_collator([(r["input"], r["output"]) for r in chunk])
                with torch.amp.autocast(device_type=trainer.device.type, enabled=use_amp, dtype=amp_dtype):
                    out = model(batch)
                loss = out.get("total_loss")
                if loss is not None:
                    total += float(loss.detach().float().cpu())
                    n += len(chunk)
        metrics = {"eval_loss": total / n if n else float("nan")}
        metrics.update(extraction_metrics(trainer.base_model, records, batch_size=bs, max_len=trainer.data.collator_max_len,
                                          label_names=trainer.data.label_names,
                                          seen_mentions=trainer.data.train_mentions, decoding=trainer.data.decoding))
    finally:
        if was_training:
            model.train()
        trainer.processor.change_mode(is_training=True)
    return metrics
