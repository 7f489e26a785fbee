"""NER records in gliner2's own JSONL training format (`input` + `output`), and their stats.

The checks mirror gliner2 2.1.0: `training/data.py` (InputExample.from_dict / validate) and
`processing/records.py`, so a file that passes here never fails inside gliner2. No gliner2 import.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

from felix_train.data.formats.core import ErrorType, _check_string, _kind, _Problems, _require, _short


GLINER2_OUTPUT_KEYS = (
    "entities",
    "entity_descriptions",
    "classifications",
    "relations",
    "relation_descriptions",
    "json_structures",
    "json_descriptions",
    "record_metadata",
)
GLINER2_TASKS = ("entities", "classifications", "relations", "json_structures")
_RECORD_MODES = ("natural", "latent", "anchorless")
_OCCURRENCE_POLICIES = ("all", "first", "error_on_ambiguous", "latent_all")
_CARDINALITIES = ("optional_one", "required_one", "zero_or_more", "one_or_more")


def _check_span(p: _Problems, span: dict, text: str, path: str) -> None:
    """A mention pinned to offsets: `{"text", "start", "end"}` with `input[start:end] == text`."""
    missing = [k for k in ("text", "start", "end") if k not in span]
    if missing:
        p.add(ErrorType.MISSING_KEY, f"span `{path}` has no {', '.join(f'`{k}`' for k in missing)}")
        return
    start, end = span["start"], span["end"]
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) or isinstance(end, bool):
        p.add(ErrorType.WRONG_TYPE, f"span `{path}` offsets must be integers, got start: {_kind(start)}, end: {_kind(end)}")
    elif start < 0 or end <= start:
        p.add(ErrorType.INVALID_VALUE, f"span `{path}` needs 0 <= start < end, got [{start}, {end})")
    elif text[start:end] != span["text"]:
        p.add(
            ErrorType.MENTION_NOT_FOUND,
            f"span `{path}` is {_short(span['text'])} but input[{start}:{end}] is {_short(text[start:end])}",
        )


def _check_surface(p: _Problems, value: Any, text: str, lowered: str, path: str, *, allow_absent: bool) -> None:
    """A mention or field value: a string found in `input` (case-insensitive, as gliner2 does) or a span."""
    if value is None or value == "":
        if not allow_absent:
            p.add(ErrorType.EMPTY_VALUE, f"`{path}` is empty; a mention is a non-empty substring of `input`")
        return
    if isinstance(value, str):
        if value.lower() not in lowered:
            p.add(ErrorType.MENTION_NOT_FOUND, f"{path} {_short(value)} is not found in `input`")
    elif isinstance(value, dict):
        _check_span(p, value, text, path)
    else:
        p.wrong_type(path, value, "a string found in `input` (or a {text, start, end} span)")


def _check_str_map(p: _Problems, value: Any, path: str) -> bool:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        p.wrong_type(path, value, "an object of strings")
        return False
    return True


def _check_entities(p: _Problems, entities: Any, text: str, lowered: str) -> None:
    if not isinstance(entities, dict):
        p.wrong_type("output.entities", entities, 'an object {label: [mention, ...]}')
        return
    for label, mentions in entities.items():
        path = f"output.entities.{label}"
        if not label.strip():
            p.add(ErrorType.EMPTY_VALUE, "`output.entities` has an empty label")
        if not isinstance(mentions, list):
            p.wrong_type(path, mentions, f'a list of strings (mentions), e.g. {{"{label}": ["..."]}}')
            continue
        for i, mention in enumerate(mentions):
            if mention is not None and not isinstance(mention, (str, dict)):
                p.wrong_type(f"{path}[{i}]", mention, "a string")
            else:
                _check_surface(p, mention, text, lowered, f"{path}[{i}]", allow_absent=False)


def _check_classifications(p: _Problems, items: Any) -> None:
    if not isinstance(items, list):
        p.wrong_type("output.classifications", items, "a list of {task, labels, true_label} objects")
        return
    for i, item in enumerate(items):
        path = f"output.classifications[{i}]"
        if not isinstance(item, dict):
            p.wrong_type(path, item, "an object with `task`, `labels` and `true_label`")
            continue
        missing = [k for k in ("task", "labels", "true_label") if k not in item]
        if missing:
            p.add(ErrorType.MISSING_KEY, f"`{path}` has no {', '.join(f'`{k}`' for k in missing)}")
        if "task" in item:
            _check_string(p, item["task"], f"{path}.task")
        labels = item.get("labels")
        label_set: set[str] | None = None
        if "labels" in item:
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                p.wrong_type(f"{path}.labels", labels, "a list of strings")
            elif not labels:
                p.add(ErrorType.EMPTY_VALUE, f"`{path}.labels` is empty; list every label of the task")
            else:
                label_set = set(labels)
        if "true_label" in item:
            true_label = item["true_label"]
            true_labels = [true_label] if isinstance(true_label, str) else true_label
            if not isinstance(true_labels, list) or not all(isinstance(x, str) for x in true_labels):
                p.wrong_type(f"{path}.true_label", true_label, "a string or a list of strings")
            elif label_set is not None:
                for tl in true_labels:
                    if tl not in label_set:
                        p.add(
                            ErrorType.INVALID_LABEL,
                            f"{path}.true_label {_short(tl)} is not in `labels` ({', '.join(labels)})",
                        )
        if "multi_label" in item and not isinstance(item["multi_label"], bool):
            p.wrong_type(f"{path}.multi_label", item["multi_label"], "true or false")
        if item.get("prompt") is not None and not isinstance(item["prompt"], str):
            p.wrong_type(f"{path}.prompt", item["prompt"], "a string")
        if item.get("examples") is not None:
            examples = item["examples"]
            if not isinstance(examples, list) or not all(
                isinstance(ex, list) and len(ex) == 2 and all(isinstance(x, str) for x in ex) for ex in examples
            ):
                p.wrong_type(f"{path}.examples", examples, "a list of [input, label] string pairs")
        if item.get("label_descriptions") is not None:
            descriptions = item["label_descriptions"]
            if _check_str_map(p, descriptions, f"{path}.label_descriptions") and label_set is not None:
                for key in descriptions:
                    if key not in label_set:
                        p.add(ErrorType.INVALID_LABEL, f"{path}.label_descriptions names {_short(key)}, not in `labels`")


def _named_field_objects(
    p: _Problems, items: list, list_path: str, what: str, item_hint: str, fields_hint: str
) -> Iterator[tuple[str, str, dict]]:
    """`(path, name, fields)` of each `{name: {field: value}}` entry of a relations / json_structures list.

    Reports a non-object entry, an empty name, and fields that are not a non-empty object (those are skipped).
    """
    for i, item in enumerate(items):
        path = f"{list_path}[{i}]"
        if not isinstance(item, dict) or not item:
            p.wrong_type(path, item, item_hint)
            continue
        for name, fields in item.items():
            where = f"{path}.{name}"
            if not name.strip():
                p.add(ErrorType.EMPTY_VALUE, f"`{path}` has an empty {what} name")
            if not isinstance(fields, dict):
                p.wrong_type(where, fields, fields_hint)
                continue
            if not fields:
                p.add(ErrorType.EMPTY_VALUE, f"`{where}` has no fields")
                continue
            yield where, name, fields


def _check_relations(p: _Problems, items: Any, text: str, lowered: str) -> None:
    if not isinstance(items, list):
        p.wrong_type("output.relations", items, 'a list of {relation: {"head": ..., "tail": ...}} objects')
        return
    field_sets: dict[str, tuple[str, ...]] = {}
    for where, name, fields in _named_field_objects(
        p, items, "output.relations", "relation",
        'a non-empty object {relation: {"head": ..., "tail": ...}}',
        'an object of fields, e.g. {"head": "...", "tail": "..."}',
    ):
        for fname, value in fields.items():
            values = value if isinstance(value, list) else [value]
            for j, v in enumerate(values):
                fpath = f"{where}.{fname}" + (f"[{j}]" if isinstance(value, list) else "")
                _check_surface(p, v, text, lowered, fpath, allow_absent=True)
        names = tuple(sorted(fields))
        if name in field_sets and field_sets[name] != names:
            p.add(
                ErrorType.INCONSISTENT_RELATION,
                f"relation {_short(name)} has fields {list(field_sets[name])} and {list(names)}; "
                "one relation keeps one set of fields",
            )
        field_sets.setdefault(name, names)


def _check_structures(p: _Problems, items: Any, text: str, lowered: str) -> dict[str, list[set[str]]]:
    """Returns {structure name: [field names of each occurrence]}, for the record_metadata check."""
    seen: dict[str, list[set[str]]] = {}
    if not isinstance(items, list):
        p.wrong_type("output.json_structures", items, "a list of {structure: {field: value}} objects")
        return seen
    for where, name, fields in _named_field_objects(
        p, items, "output.json_structures", "structure",
        "a non-empty object {structure: {field: value}}", "an object of fields",
    ):
        seen.setdefault(name, []).append(set(fields))
        for fname, value in fields.items():
            fpath = f"{where}.{fname}"
            if isinstance(value, dict) and "value" in value and "choices" in value:
                choices = value["choices"]
                if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or not choices:
                    p.wrong_type(f"{fpath}.choices", choices, "a non-empty list of strings")
                elif value["value"] not in choices:
                    p.add(
                        ErrorType.INVALID_LABEL,
                        f"{fpath}.value {_short(value['value'])} is not in `choices` ({', '.join(choices)})",
                    )
            elif isinstance(value, list):
                for j, v in enumerate(value):
                    if v is not None and not isinstance(v, (str, dict)):
                        p.wrong_type(f"{fpath}[{j}]", v, "a string or a {text, start, end} span")
                    else:
                        _check_surface(p, v, text, lowered, f"{fpath}[{j}]", allow_absent=True)
            elif value is None or isinstance(value, (str, dict)):
                _check_surface(p, value, text, lowered, fpath, allow_absent=True)
            else:
                p.wrong_type(fpath, value, "a string, a span, a list of them, or {value, choices}")
    return seen


def _check_record_metadata(p: _Problems, meta: Any, structures: dict[str, list[set[str]]]) -> None:
    if not isinstance(meta, dict):
        p.wrong_type("output.record_metadata", meta, "an object {structure: {mode, anchor, ...}}")
        return
    for name, cfg in meta.items():
        path = f"output.record_metadata.{name}"
        if not isinstance(cfg, dict):
            p.wrong_type(path, cfg, "an object")
            continue
        mode = cfg.get("mode", "natural")
        anchor = cfg.get("anchor")
        if mode is not None and mode not in _RECORD_MODES:
            p.add(ErrorType.INVALID_VALUE, f"{path}.mode is {_short(mode)}; expected one of {', '.join(_RECORD_MODES)}")
        if mode not in (None, "natural") and anchor:
            p.add(ErrorType.INVALID_VALUE, f"{path} has mode {_short(mode)}, which takes no `anchor`; remove it")
        if anchor is not None and not isinstance(anchor, str):
            p.wrong_type(f"{path}.anchor", anchor, "a field name")
        elif anchor and mode == "natural":
            for fields in structures.get(name, []):
                if anchor not in fields:
                    p.add(
                        ErrorType.INVALID_VALUE,
                        f"{path}.anchor {_short(anchor)} is not a field of structure {_short(name)} "
                        f"(fields: {', '.join(sorted(fields))})",
                    )
                    break
        policy = cfg.get("occurrence_policy")
        if policy is not None and policy not in _OCCURRENCE_POLICIES:
            p.add(
                ErrorType.INVALID_VALUE,
                f"{path}.occurrence_policy is {_short(policy)}; expected one of {', '.join(_OCCURRENCE_POLICIES)}",
            )
        fields_cfg = cfg.get("fields")
        if fields_cfg is not None:
            if not isinstance(fields_cfg, dict):
                p.wrong_type(f"{path}.fields", fields_cfg, "an object {field: {cardinality, exclusive}}")
                continue
            for fname, fcfg in fields_cfg.items():
                card = fcfg.get("cardinality") if isinstance(fcfg, dict) else None
                if fcfg is not None and not isinstance(fcfg, dict):
                    p.wrong_type(f"{path}.fields.{fname}", fcfg, "an object")
                elif card is not None and card not in _CARDINALITIES:
                    p.add(
                        ErrorType.INVALID_VALUE,
                        f"{path}.fields.{fname}.cardinality is {_short(card)}; expected one of {', '.join(_CARDINALITIES)}",
                    )


def _check_gliner2_record(obj: dict, p: _Problems) -> None:
    has_input = _require(p, obj, "input", "the text to extract from")
    has_output = _require(p, obj, "output", 'the annotations, e.g. {"entities": {"person": ["..."]}}')
    text = obj.get("input")
    text_ok = has_input and _check_string(p, text, "input")
    if not has_output:
        return
    output = obj["output"]
    if not isinstance(output, dict):
        p.wrong_type("output", output, 'an object, e.g. {"entities": {"person": ["..."]}}')
        return
    unknown = [k for k in output if k not in GLINER2_OUTPUT_KEYS]
    for key in unknown:
        p.add(
            ErrorType.UNEXPECTED_KEY,
            f"`output.{key}` is not a gliner2 key; expected {', '.join(GLINER2_OUTPUT_KEYS)}",
        )
    text = text if text_ok else ""
    lowered = text.lower()
    # gliner2's from_dict treats an absent or null task as no task; so do we.
    if output.get("entities") is not None:
        _check_entities(p, output["entities"], text, lowered)
    if output.get("entity_descriptions") is not None:
        _check_str_map(p, output["entity_descriptions"], "output.entity_descriptions")
    if output.get("classifications") is not None:
        _check_classifications(p, output["classifications"])
    if output.get("relations") is not None:
        _check_relations(p, output["relations"], text, lowered)
    if output.get("relation_descriptions") is not None:
        _check_str_map(p, output["relation_descriptions"], "output.relation_descriptions")
    structures: dict[str, list[set[str]]] = {}
    if output.get("json_structures") is not None:
        structures = _check_structures(p, output["json_structures"], text, lowered)
    if output.get("json_descriptions") is not None:
        jd = output["json_descriptions"]
        if not isinstance(jd, dict) or not all(
            isinstance(v, dict) and all(isinstance(s, str) for s in v.values()) for v in jd.values()
        ):
            p.wrong_type("output.json_descriptions", jd, "an object {structure: {field: description}}")
    if output.get("record_metadata") is not None:
        _check_record_metadata(p, output["record_metadata"], structures)

    # InputExample.validate: a record needs at least one task. entity_descriptions declare labels too.
    has_task = any(output.get(k) for k in GLINER2_TASKS) or bool(
        isinstance(output.get("entity_descriptions"), dict) and output["entity_descriptions"]
    )
    # `"entities": {}` (a sentence with no mentions, as WNUT-17 and most NER exports write it) is accepted:
    # felix gives every entity record every label of its dataset before training (`[]` = none of this type),
    # which is what gliner2 2.1.0 needs (it rejects `{}`). `validate_file` refuses a dataset in which no record
    # names any entity type.
    if not has_task:
        if not isinstance(output.get("entities"), dict):
            p.add(
                ErrorType.NO_TASK,
                "`output` has no task; give at least one of entities, classifications, relations, json_structures",
            )


class _Gliner2Stats:
    def __init__(self) -> None:
        self.records_per_task: Counter[str] = Counter()
        self.records_per_entity_label: Counter[str] = Counter()
        self.mentions_per_entity_label: Counter[str] = Counter()
        self.records_without_entities = 0
        self.entity_labels: set[str] = set()  # declared anywhere, with or without mentions
        self.first_empty_entities_line = 0  # first record whose `entities` is {}

    def add(self, obj: dict, lineno: int = 0) -> None:
        output = obj.get("output")
        if not isinstance(output, dict):
            return
        for key in ("entities", "entity_descriptions"):
            if isinstance(output.get(key), dict):
                self.entity_labels.update(output[key])
        if output.get("entities") == {} and not self.first_empty_entities_line:
            self.first_empty_entities_line = lineno
        for task in GLINER2_TASKS:
            if output.get(task):
                self.records_per_task[task] += 1
        entities = output.get("entities")
        mentions = 0
        if isinstance(entities, dict):
            for label, values in entities.items():
                n = len(values) if isinstance(values, list) else 0
                if n:
                    self.records_per_entity_label[label] += 1
                    self.mentions_per_entity_label[label] += n
                mentions += n
        if not mentions:
            self.records_without_entities += 1

    def to_dict(self) -> dict:
        return {
            "records_per_task": dict(sorted(self.records_per_task.items())),
            "records_per_entity_label": dict(sorted(self.records_per_entity_label.items())),
            "mentions_per_entity_label": dict(sorted(self.mentions_per_entity_label.items())),
            "records_without_entities": self.records_without_entities,
        }
