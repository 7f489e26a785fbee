"""NER figures of a GLiNER2 model on gliner2-format records: per-label, micro and macro P/R/F1, exact match.

Each record is `{"input": text, "output": {"entities": {label: [mention, ...]}}}` (`"entities": {}`: none).
The labels scored are the union of those the file names. Scoring is the trainer's own
(`felix_train.metrics_ner.score_entities`): per record and label, multisets of mention texts, exact
match, case-sensitive, whitespace-normalised.

The decision threshold is `threshold` when given, else the model folder's saved thresholds
(`felix_model.json` `thresholds`: `{"default": t, "<label>": t, ...}`), else 0.5 (the trainer's).
`labels_map` (`{"model label": "test label"}`, several may share a target) asks the model for its own
labels and renames its predictions onto the test file's before scoring. A felix model is asked for each
label under the name it was trained with (`felix_model.json` `label_prompts`, `label_verbalize`:
`creative-work` as `creative work`) and with its saved description (`label_descriptions`); the report
keeps the file's labels (`asked_as` lists the renamed ones).

Entities are decoded as `decoding` says when given (`flat`: among overlapping spans of any label only the
best-scoring is kept; `nested`: gliner2's label-by-label answer), else as the model was trained
(`felix_model.json` `decoding`), else nested (a model felix did not train); the report says which
(`decoding`, `decoding_source`).
"""

from __future__ import annotations

import time

from felix_train.errors import DatasetError, FelixError
from felix_train.models.source import ModelRef
from felix_train.metrics_ner import mentions_of, score_entities
from felix_train.ner_decoding import DECODINGS, FLAT, NESTED, flat_entities
from felix_train.trainers.gliner2.labels import asked_labels

DEFAULT_THRESHOLD = 0.5  # the GLiNER2 trainer's eval threshold


def parse_labels_map(text: str | dict[str, str] | None) -> dict[str, str] | None:
    """`"a=b,c=b"` → `{"a": "b", "c": "b"}` (model label → test label); a dict passes through."""
    if text is None or isinstance(text, dict):
        return text
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not source or not target:
            raise FelixError(f"--labels-map takes MODEL_LABEL=TEST_LABEL pairs separated by commas, got {item!r}; "
                             "e.g. --labels-map person=per,organisation=org,company=org")
        if source in mapping and mapping[source] != target:
            raise FelixError(f"--labels-map maps {source!r} twice ({mapping[source]!r} and {target!r}); keep one")
        mapping[source] = target
    return mapping or None


def ner_records(records: list[tuple[int, dict]]) -> list[dict]:
    """`{"input", "entities"}` of each gliner2-format record; DatasetError naming the first bad line."""
    out = []
    for line, record in records:
        text = record.get("input", record.get("text"))
        if not isinstance(text, str):
            raise DatasetError(f"line {line}: a NER record needs a string `input`; got {type(text).__name__}")
        output = record.get("output") or {}
        entities = output.get("entities") if isinstance(output, dict) else None
        if entities is None:
            entities = {}
        if not isinstance(entities, dict):
            raise DatasetError(f"line {line}: `output.entities` must be an object label -> mentions")
        out.append({"input": text, "entities": entities})
    return out


def decision_thresholds(ref: ModelRef, threshold: float | None) -> tuple[float, dict[str, float], str]:
    """(default threshold, per-label thresholds, where they came from: `argument`, `felix_model.json`, `default`)."""
    if threshold is not None:
        return float(threshold), {}, "argument"
    saved = ref.info.get("thresholds")
    if isinstance(saved, dict) and saved:
        per_label = {str(k): float(v) for k, v in saved.items() if k != "default"}
        return float(saved.get("default", DEFAULT_THRESHOLD)), per_label, "felix_model.json"
    return DEFAULT_THRESHOLD, {}, "default"


def entity_decoding(ref: ModelRef, decoding: str | None) -> tuple[str, str]:
    """(`flat` or `nested`, where it came from: `argument`, `felix_model.json`, `default`)."""
    if decoding is not None:
        if decoding not in DECODINGS:
            raise FelixError(f"--decoding takes {' or '.join(DECODINGS)}, got {decoding!r}")
        return decoding, "argument"
    saved = ref.info.get("decoding")
    if saved in DECODINGS:
        return saved, "felix_model.json"
    return NESTED, "default"


def load_gliner2(ref: ModelRef, device: str | None = None):
    """The model in eval mode: its full weights (GLiNER2, or AutoExtractor for other architectures), else its
    LoRA adapter merged onto the base."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if ref.weights is not None:
        from felix_train.jobs import read_json

        architecture = (read_json(ref.weights / "config.json") or {}).get("architecture")
        if architecture is None or str(architecture).strip().lower() == "span":
            from gliner2 import GLiNER2 as loader
        else:
            from gliner2 import AutoExtractor as loader
        model = loader.from_pretrained(str(ref.weights))
    elif ref.adapter is not None:
        from gliner2 import GLiNER2
        from peft import PeftModel

        model = PeftModel.from_pretrained(GLiNER2.from_pretrained(str(ref.base())), str(ref.adapter)).merge_and_unload()
        model._lora_layers = {}
    else:
        raise FelixError(f"{ref.model_dir} holds no GLiNER2 weights (config.json) nor adapter; train the job again")
    return model.to(device).eval()


def predict(model, texts: list[str], labels: list[str], threshold: float, per_label: dict[str, float],
            batch_size: int = 16, asked: dict[str, str] | None = None,
            descriptions: dict[str, str] | None = None, decoding: str = NESTED) -> list[dict[str, list[str]]]:
    """One `{label: [mention, ...]}` per text. `include_spans=True` keeps repeated mentions of one text at
    different offsets (the plain payload de-duplicates them); per-label thresholds go in the schema. `asked`
    (label -> the name the model is asked, as it was trained) and `descriptions` (by label) come from
    `felix_model.json`; predictions come back under `labels`, decoded flat (`felix_train.ner_decoding`) or nested."""
    import torch

    asked, descriptions = asked or {}, descriptions or {}
    entity_types = {asked.get(label, label): {**({"threshold": per_label[label]} if label in per_label else {}),
                                              **({"description": descriptions[label]} if label in descriptions else {})}
                    for label in labels}
    preds: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            results = model.batch_extract_entities(texts[start:start + batch_size], entity_types,
                                                   batch_size=batch_size, threshold=threshold, include_spans=True,
                                                   **({"include_confidence": True} if decoding == FLAT else {}))
            for res in results:
                ents = (res or {}).get("entities") or {}
                if decoding == FLAT:
                    ents = flat_entities(ents)
                preds.append({label: mentions_of(ents.get(asked.get(label, label))) for label in labels})
    return preds


def rename_predictions(preds: list[dict[str, list[str]]], labels_map: dict[str, str]) -> list[dict[str, list[str]]]:
    """Model labels → test labels; the mentions of labels mapped onto one target are pooled."""
    out = []
    for pred in preds:
        renamed: dict[str, list[str]] = {}
        for label, mentions in pred.items():
            renamed.setdefault(labels_map.get(label, label), []).extend(mentions)
        out.append(renamed)
    return out


def evaluate_ner(ref: ModelRef, records: list[tuple[int, dict]], *, threshold: float | None = None,
                 labels_map: dict[str, str] | str | None = None, batch_size: int = 16,
                 device: str | None = None, decoding: str | None = None) -> dict:
    """The NER report (see the module docstring)."""
    rows = ner_records(records)
    labels_map = parse_labels_map(labels_map)
    labels = sorted({lab for row in rows for lab in row["entities"]} | set((labels_map or {}).values()))
    if not labels:
        raise DatasetError("the records name no entity label; list the types, e.g. "
                           '{"entities": {"person": [], "location": []}}')
    targets = set((labels_map or {}).values())
    model_labels = sorted(set(labels_map or {}) | {lab for lab in labels if lab not in targets})
    default, per_label, origin = decision_thresholds(ref, threshold)
    decoding, decoding_origin = entity_decoding(ref, decoding)

    t0 = time.perf_counter()
    model = load_gliner2(ref, device)
    load_s = time.perf_counter() - t0
    texts = [row["input"] for row in rows]
    t0 = time.perf_counter()
    asked = asked_labels(model_labels, ref.info)
    descriptions = ref.info.get("label_descriptions") or {}
    preds = predict(model, texts, model_labels, default, per_label, max(1, batch_size), asked,
                    descriptions, decoding) if texts else []
    infer_s = time.perf_counter() - t0
    if labels_map:
        preds = rename_predictions(preds, labels_map)

    report = {"eval": "ner", "threshold": default, "threshold_source": origin, "decoding": decoding,
              "decoding_source": decoding_origin}
    if per_label:
        report["label_thresholds"] = {lab: per_label[lab] for lab in model_labels if lab in per_label}
    if any(asked[lab] != lab for lab in model_labels):
        report["asked_as"] = {lab: asked[lab] for lab in model_labels if asked[lab] != lab}
    if labels_map:
        report["labels_map"] = labels_map
        report["model_labels"] = model_labels
    report.update(score_entities([row["entities"] for row in rows], preds, labels=labels))
    report["seconds"] = {"load": round(load_s, 3), "inference": round(infer_s, 3)}
    return report

