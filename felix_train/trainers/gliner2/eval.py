"""Evaluation of a GLiNER2 model: eval loss and exact-match precision/recall/F1 of its own extraction.

`extraction_metrics(model, records)` asks the model (`batch_extract`, threshold 0.5) for the
tasks and labels of each gold record (`_eval_schema`: entity types in sorted order, whatever
order training used) and scores what it returns against gold, per label and micro: entity
mentions by exact normalised text per record and label (multisets, `felix_train.metrics_ner`),
classifications by label, relations by (head, tail), structures by (field, value).
`evaluate(trainer)` adds the eval loss per record (gliner2 sums its loss over a batch). Every
rank of a distributed run evaluates the whole eval set alike: no collectives, the same metrics.
Pure Python at import (torch loads inside `evaluate`).
"""

from __future__ import annotations

from typing import Any

from felix_train.metrics_ner import normalize_mention, prf, score_entities

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


def extraction_metrics(model, records: list[dict], *, batch_size: int, max_len: int | None = None) -> dict[str, float]:
    """Micro and per-label precision/recall/F1 of `model.batch_extract` against gold (exact match).

    Entities are matched as multisets of normalised mention text per record and label
    (`felix_train.metrics_ner`); classifications by label, relations by (head, tail)
    text, structures by (field, value) text. Threshold 0.5.
    """
    from collections import Counter

    if not records:
        return {}
    schemas = [_eval_schema(r["output"]) for r in records]
    texts = [r["input"] for r in records]
    preds = model.batch_extract(texts, schemas, batch_size=batch_size, threshold=EVAL_THRESHOLD, max_len=max_len)

    counts: dict[str, list[int]] = {}
    ent_idx = [i for i, s in enumerate(schemas) if "entities" in s]
    if ent_idx:
        gold = [records[i]["output"]["entities"] for i in ent_idx]
        pred = [preds[i].get("entities") or {} for i in ent_idx]
        scored = score_entities(gold, pred, labels=sorted({lab for i in ent_idx for lab in schemas[i]["entities"]}))
        for label, m in scored["per_label"].items():
            counts[label] = [m["tp"], m["fp"], m["fn"]]
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
        metrics.update(extraction_metrics(trainer.base_model, records, batch_size=bs, max_len=trainer.data.collator_max_len))
    finally:
        if was_training:
            model.train()
        trainer.processor.change_mode(is_training=True)
    return metrics
