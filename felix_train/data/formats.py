"""Dataset formats, and the validation of a JSONL file against them.

A dataset is one JSONL file (one JSON object per line, UTF-8) in exactly one format:

> Formats and the algorithms that read them

- `gliner2` (gliner2 / sft): `{"input": str, "output": {"entities": {label: [mention, ...]}, "classifications":
  [...], "relations": [...], "json_structures": [...]}}`, the gliner2 library's own JSONL training format.
- `messages` (causal_lm / sft): `{"messages": [{"role", "content"}, ...]}` plus an optional `tools` list.
- `prompt_completion` (causal_lm / sft): `prompt` and `completion`, both strings or both lists of messages.
- `text` (causal_lm / sft): `{"text": str}`.
- `preference` (causal_lm / dpo): `prompt`, `chosen`, `rejected`, all strings or all lists of messages; `prompt`
  may be left out when `chosen` and `rejected` are whole conversations.
- `prompt` (causal_lm / grpo): `prompt` (a string or a list of messages) plus any other columns (e.g. `answer`)
  that the reward functions read; no `completion`, `chosen` or `rejected`.

`validate_file` streams the file once and reports every bad line with its number, a reason and a stable
`type`. For `gliner2` it rejects whatever gliner2 2.1.0's `InputExample.validate` rejects (and what its loader
would crash on), so a file that passes here never fails inside gliner2. Pure Python: no torch, no gliner2 import.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections import Counter
from enum import Enum
from typing import Any, Iterator

from pydantic import BaseModel, Field

from felix_train.catalog import Algorithm, ModelFamily
from felix_train.errors import DatasetError


class DatasetFormat(str, Enum):
    GLINER2 = "gliner2"
    MESSAGES = "messages"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"
    PREFERENCE = "preference"
    PROMPT = "prompt"


ALGORITHM_FORMATS: dict[tuple[ModelFamily, Algorithm], frozenset[DatasetFormat]] = {
    (ModelFamily.GLINER2, Algorithm.SFT): frozenset({DatasetFormat.GLINER2}),
    (ModelFamily.CAUSAL_LM, Algorithm.SFT): frozenset(
        {DatasetFormat.MESSAGES, DatasetFormat.PROMPT_COMPLETION, DatasetFormat.TEXT}
    ),
    (ModelFamily.CAUSAL_LM, Algorithm.DPO): frozenset({DatasetFormat.PREFERENCE}),
    (ModelFamily.CAUSAL_LM, Algorithm.GRPO): frozenset({DatasetFormat.PROMPT}),
}

ROLES = ("system", "user", "assistant", "tool")
"""Chat roles a message may have."""


class ErrorType(str, Enum):
    """The `type` of a `LineError`: stable names that tests, the API and clients can match on."""

    EMPTY_FILE = "empty_file"  # line 0: the file holds no record
    FORMAT_NOT_ACCEPTED = "format_not_accepted"  # line 0: the dataset's format is not in `expected`
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_FORMAT = "unknown_format"  # the keys match no format
    MIXED_FORMATS = "mixed_formats"  # the line's format differs from the first record's
    MISSING_KEY = "missing_key"
    UNEXPECTED_KEY = "unexpected_key"
    WRONG_TYPE = "wrong_type"
    EMPTY_VALUE = "empty_value"  # an empty `input`, `text`, `completion`, mention, label, ...
    UNKNOWN_ROLE = "unknown_role"
    EMPTY_CONTENT = "empty_content"  # an assistant turn with no content
    NO_ASSISTANT_TURN = "no_assistant_turn"
    LAST_TURN_NOT_ASSISTANT = "last_turn_not_assistant"
    CHOSEN_EQUALS_REJECTED = "chosen_equals_rejected"
    MENTION_NOT_FOUND = "mention_not_found"  # a gliner2 mention/value is not in `input`
    EMPTY_ENTITIES = "empty_entities"  # gliner2 `"entities": {}` in a dataset that names no entity type
    NO_TASK = "no_task"  # gliner2 `output` with no task at all
    INVALID_LABEL = "invalid_label"  # a true label, described label or choice not among the declared ones
    INVALID_VALUE = "invalid_value"  # a value outside its closed set (record_metadata mode, span offsets, ...)
    INCONSISTENT_RELATION = "inconsistent_relation"  # one relation name with two field sets in a record


class LineError(BaseModel):
    """One problem in a dataset file. `line` is 1-based; 0 means the file as a whole."""

    line: int
    msg: str
    type: str


class ValidationReport(BaseModel):
    """What `validate_file` found."""

    format: DatasetFormat | None = Field(None, description="The dataset's format (its first record's), or None.")
    num_records: int = Field(0, description="Non-blank lines, bad ones included.")
    num_errors: int = Field(0, description="Every problem found; `errors` keeps the first `max_errors` of them.")
    errors: list[LineError] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list, description="Sorted union of the records' top-level keys.")
    stats: dict[str, Any] = Field(
        default_factory=dict,
        description="`chars` {min, mean, max, p95} of each record's text; gliner2 adds task and label counts.",
    )

    @property
    def ok(self) -> bool:
        return self.num_errors == 0 and self.format is not None


# ---------------------------------------------------------------------------------------------------------------
# Formats and algorithms
# ---------------------------------------------------------------------------------------------------------------

_FORMAT_ORDER = list(DatasetFormat)


def describe_formats(formats) -> str:
    """`"messages, prompt_completion, text"`: format names in a stable order."""
    return ", ".join(f.value for f in sorted({DatasetFormat(f) for f in formats}, key=_FORMAT_ORDER.index))


def accepted_formats(family: ModelFamily | str, algorithm: Algorithm | str) -> frozenset[DatasetFormat]:
    """The formats `algorithm` on `family` trains on; empty when the pair is not supported."""
    return ALGORITHM_FORMATS.get((ModelFamily(family), Algorithm(algorithm)), frozenset())


def format_mismatch_message(
    fmt: DatasetFormat | str, family: ModelFamily | str, algorithm: Algorithm | str, name: str | None = None
) -> str:
    """"dataset 'x' is `preference` but `sft` on causal_lm needs one of ...; <fix>"."""
    fmt, family, algorithm = DatasetFormat(fmt), ModelFamily(family), Algorithm(algorithm)
    accepted = accepted_formats(family, algorithm)
    subject = f"dataset {name!r}" if name else "dataset"
    msg = f"{subject} is `{fmt.value}` but `{algorithm.value}` on {family.value} needs one of {describe_formats(accepted)}"
    fitting = [a.value for (fam, a), fmts in ALGORITHM_FORMATS.items() if fam == family and fmt in fmts]
    if fitting:
        return msg + f"; convert the file, or set `training_algorithm: {fitting[0]}` to train on it as it is"
    return msg + "; convert the file to one of those formats"


def detect_record_format(obj: Any) -> DatasetFormat | None:
    """The format a record's keys say it is in, or None.

    `messages` → messages; `input`/`output` → gliner2; `chosen`/`rejected` → preference;
    `completion` → prompt_completion; `prompt` → prompt; `text` → text.
    """
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return DatasetFormat.MESSAGES
    if "input" in obj or "output" in obj:
        return DatasetFormat.GLINER2
    if "chosen" in obj or "rejected" in obj:
        return DatasetFormat.PREFERENCE
    if "completion" in obj:
        return DatasetFormat.PROMPT_COMPLETION
    if "prompt" in obj:
        return DatasetFormat.PROMPT
    if "text" in obj:
        return DatasetFormat.TEXT
    return None


# ---------------------------------------------------------------------------------------------------------------
# Record checks: each returns nothing and reports into a `_Problems`
# ---------------------------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """A value's JSON type name, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Problems(list):
    """(type, msg) pairs found in one record."""

    def add(self, type_: ErrorType, msg: str) -> None:
        self.append((type_.value, msg))

    def wrong_type(self, path: str, value: Any, expected: str) -> None:
        self.add(ErrorType.WRONG_TYPE, f"`{path}` must be {expected}, got {_kind(value)}")


def _require(p: _Problems, obj: dict, key: str, why: str = "") -> bool:
    if key in obj:
        return True
    p.add(ErrorType.MISSING_KEY, f"missing key `{key}`" + (f" ({why})" if why else ""))
    return False


def _check_string(p: _Problems, value: Any, path: str, *, allow_empty: bool = False) -> bool:
    if not isinstance(value, str):
        p.wrong_type(path, value, "a string")
        return False
    if not allow_empty and not value.strip():
        p.add(ErrorType.EMPTY_VALUE, f"`{path}` is empty")
        return False
    return True


def _check_messages(
    p: _Problems,
    value: Any,
    path: str,
    *,
    require_assistant: bool,
    require_last_assistant: bool,
    what: str = "an SFT conversation",
) -> None:
    """A list of {role, content} messages (TRL's conversational format)."""
    if not isinstance(value, list):
        p.wrong_type(path, value, "a list of {role, content} objects")
        return
    if not value:
        p.add(ErrorType.EMPTY_VALUE, f"`{path}` is an empty list")
        return
    roles: list[str | None] = []
    for i, msg in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(msg, dict):
            p.wrong_type(where, msg, "an object with `role` and `content`")
            roles.append(None)
            continue
        role = msg.get("role")
        if "role" not in msg:
            p.add(ErrorType.MISSING_KEY, f"`{where}` has no `role`; expected one of {', '.join(ROLES)}")
        elif not isinstance(role, str):
            p.wrong_type(f"{where}.role", role, "a string")
        elif role not in ROLES:
            p.add(ErrorType.UNKNOWN_ROLE, f"{where}.role is {_short(role)}; expected one of {', '.join(ROLES)}")
        roles.append(role if isinstance(role, str) else None)

        has_tool_calls = role == "assistant" and isinstance(msg.get("tool_calls"), list) and bool(msg["tool_calls"])
        content = msg.get("content")
        if "content" not in msg:
            if not has_tool_calls:
                p.add(ErrorType.MISSING_KEY, f"`{where}` has no `content`")
        elif content is None and has_tool_calls:
            pass
        elif not isinstance(content, str):
            p.wrong_type(f"{where}.content", content, "a string")
        elif role == "assistant" and not content.strip() and not has_tool_calls:
            p.add(
                ErrorType.EMPTY_CONTENT,
                f"{where}.content is empty in an assistant turn; there is nothing to learn from it: "
                "write the reply or drop the record",
            )
    if require_assistant and "assistant" not in roles:
        p.add(ErrorType.NO_ASSISTANT_TURN, f"`{path}` has no assistant turn; {what} needs at least one")
    elif require_last_assistant and roles[-1] != "assistant":
        p.add(
            ErrorType.LAST_TURN_NOT_ASSISTANT,
            f"{path}[{len(value) - 1}] (the last turn) is {_short(roles[-1])}; {what} must end with an "
            "assistant turn: drop the trailing turns or add the assistant reply",
        )


def _check_messages_record(obj: dict, p: _Problems) -> None:
    _check_messages(p, obj["messages"], "messages", require_assistant=True, require_last_assistant=True)
    if "tools" in obj and obj["tools"] is not None:
        tools = obj["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            p.wrong_type("tools", tools, "a list of tool (function schema) objects")


def _check_text_record(obj: dict, p: _Problems) -> None:
    _check_string(p, obj["text"], "text")


def _check_prompt_completion_record(obj: dict, p: _Problems) -> None:
    has_prompt = _require(p, obj, "prompt")
    has_completion = _require(p, obj, "completion")
    if not (has_prompt and has_completion):
        return
    prompt, completion = obj["prompt"], obj["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        _check_string(p, completion, "completion")
    elif isinstance(prompt, list) and isinstance(completion, list):
        _check_messages(p, prompt, "prompt", require_assistant=False, require_last_assistant=False)
        _check_messages(
            p, completion, "completion", require_assistant=True, require_last_assistant=True, what="`completion`"
        )
    else:
        p.add(
            ErrorType.WRONG_TYPE,
            f"`prompt` and `completion` must both be strings or both be lists of messages; "
            f"got prompt: {_kind(prompt)}, completion: {_kind(completion)}",
        )


def _check_preference_record(obj: dict, p: _Problems) -> None:
    has_chosen = _require(p, obj, "chosen")
    has_rejected = _require(p, obj, "rejected")
    if not (has_chosen and has_rejected):
        return
    chosen, rejected = obj["chosen"], obj["rejected"]
    keys = ["prompt", "chosen", "rejected"] if "prompt" in obj else ["chosen", "rejected"]
    kinds = {_kind(obj[k]) for k in keys}
    if kinds == {"string"}:
        if "prompt" not in obj:
            p.add(
                ErrorType.MISSING_KEY,
                "missing key `prompt`; only conversational pairs (lists of messages) may leave it out",
            )
        else:
            _check_string(p, obj["prompt"], "prompt", allow_empty=True)
        _check_string(p, chosen, "chosen")
        _check_string(p, rejected, "rejected")
    elif kinds == {"list"}:
        if "prompt" in obj:
            _check_messages(p, obj["prompt"], "prompt", require_assistant=False, require_last_assistant=False)
        what = "a preference response" if "prompt" in obj else "a preference conversation"
        for key in ("chosen", "rejected"):
            _check_messages(p, obj[key], key, require_assistant=True, require_last_assistant=True, what=what)
    else:
        got = ", ".join(f"{k}: {_kind(obj[k])}" for k in keys)
        p.add(
            ErrorType.WRONG_TYPE,
            f"`{'`, `'.join(keys)}` must all be strings or all be lists of messages; got {got}",
        )
        return
    if chosen == rejected:
        p.add(
            ErrorType.CHOSEN_EQUALS_REJECTED,
            "`chosen` and `rejected` are identical; a preference pair needs two different responses",
        )


def _check_prompt_record(obj: dict, p: _Problems) -> None:
    prompt = obj["prompt"]
    if isinstance(prompt, list):
        _check_messages(p, prompt, "prompt", require_assistant=False, require_last_assistant=False)
    elif isinstance(prompt, str):
        _check_string(p, prompt, "prompt")
    else:
        p.wrong_type("prompt", prompt, "a string or a list of messages")


# -- gliner2 ------------------------------------------------------------------------------------------------------
# Mirrors gliner2 2.1.0: `training/data.py` (InputExample.from_dict / validate) and `processing/records.py`.

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


def _check_relations(p: _Problems, items: Any, text: str, lowered: str) -> None:
    if not isinstance(items, list):
        p.wrong_type("output.relations", items, 'a list of {relation: {"head": ..., "tail": ...}} objects')
        return
    field_sets: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(items):
        path = f"output.relations[{i}]"
        if not isinstance(item, dict) or not item:
            p.wrong_type(path, item, 'a non-empty object {relation: {"head": ..., "tail": ...}}')
            continue
        for name, fields in item.items():
            where = f"{path}.{name}"
            if not name.strip():
                p.add(ErrorType.EMPTY_VALUE, f"`{path}` has an empty relation name")
            if not isinstance(fields, dict):
                p.wrong_type(where, fields, 'an object of fields, e.g. {"head": "...", "tail": "..."}')
                continue
            if not fields:
                p.add(ErrorType.EMPTY_VALUE, f"`{where}` has no fields")
                continue
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
    for i, item in enumerate(items):
        path = f"output.json_structures[{i}]"
        if not isinstance(item, dict) or not item:
            p.wrong_type(path, item, "a non-empty object {structure: {field: value}}")
            continue
        for name, fields in item.items():
            where = f"{path}.{name}"
            if not name.strip():
                p.add(ErrorType.EMPTY_VALUE, f"`{path}` has an empty structure name")
            if not isinstance(fields, dict):
                p.wrong_type(where, fields, "an object of fields")
                continue
            if not fields:
                p.add(ErrorType.EMPTY_VALUE, f"`{where}` has no fields")
                continue
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


_CHECKERS = {
    DatasetFormat.GLINER2: _check_gliner2_record,
    DatasetFormat.MESSAGES: _check_messages_record,
    DatasetFormat.PROMPT_COMPLETION: _check_prompt_completion_record,
    DatasetFormat.TEXT: _check_text_record,
    DatasetFormat.PREFERENCE: _check_preference_record,
    DatasetFormat.PROMPT: _check_prompt_record,
}


def check_record(obj: Any, fmt: DatasetFormat) -> list[tuple[str, str]]:
    """Problems of one record read as `fmt`: (type, msg) pairs, msgs without the `line N:` prefix."""
    p = _Problems()
    if not isinstance(obj, dict):
        p.add(ErrorType.NOT_AN_OBJECT, f"a record must be a JSON object, got {_kind(obj)}")
        return list(p)
    _CHECKERS[DatasetFormat(fmt)](obj, p)
    return list(p)


# ---------------------------------------------------------------------------------------------------------------
# Stats
# ---------------------------------------------------------------------------------------------------------------


def _chars(value: Any) -> int:
    """Characters of a string, or of the contents of a list of messages."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(m["content"]) for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))
    return 0


def record_chars(obj: dict, fmt: DatasetFormat) -> int:
    """The length in characters of a record's text (what a tokenizer sees, roughly).

    preference counts prompt plus the longer response; gliner2 counts `input`.
    """
    if fmt is DatasetFormat.GLINER2:
        return _chars(obj.get("input"))
    if fmt is DatasetFormat.MESSAGES:
        return _chars(obj.get("messages"))
    if fmt is DatasetFormat.PROMPT_COMPLETION:
        return _chars(obj.get("prompt")) + _chars(obj.get("completion"))
    if fmt is DatasetFormat.TEXT:
        return _chars(obj.get("text"))
    if fmt is DatasetFormat.PREFERENCE:
        return _chars(obj.get("prompt")) + max(_chars(obj.get("chosen")), _chars(obj.get("rejected")))
    return _chars(obj.get("prompt"))


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


def _length_stats(lengths: array) -> dict:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "min": ordered[0],
        "mean": round(sum(ordered) / n, 1),
        "max": ordered[-1],
        "p95": ordered[max(0, math.ceil(0.95 * n) - 1)],
    }


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(1-based line number, text) for each line; a line that is not UTF-8 yields its decode error."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield lineno, err
                continue
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield lineno, text


def validate_file(
    path: str | os.PathLike,
    expected: set[DatasetFormat] | frozenset[DatasetFormat] | None = None,
    max_errors: int = 200,
    *,
    purpose: str | None = None,
) -> ValidationReport:
    """Validate a JSONL dataset in one streaming pass; report every bad line.

    Args:
        path: the JSONL file.
        expected: formats the caller accepts; another format is a `format_not_accepted` error (line 0).
        max_errors: how many errors `errors` keeps; `num_errors` counts them all.
        purpose: words for the `format_not_accepted` message, e.g. "`sft` on causal_lm".

    Raises:
        OSError: the file cannot be read.
    """
    report = ValidationReport()
    errors = report.errors

    def add(line: int, type_: str, msg: str) -> None:
        report.num_errors += 1
        if len(errors) < max_errors:
            errors.append(LineError(line=line, msg=msg, type=type_))

    fmt: DatasetFormat | None = None
    first_line = 0
    columns: set[str] = set()
    lengths = array("q")
    g2 = _Gliner2Stats()

    for lineno, text in _lines(path):
        if isinstance(text, UnicodeDecodeError):
            report.num_records += 1
            add(lineno, ErrorType.INVALID_UTF8.value, f"line {lineno}: not UTF-8 (byte {text.start}); save the file as UTF-8")
            continue
        if not text.strip():
            continue
        report.num_records += 1
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            add(lineno, ErrorType.INVALID_JSON.value, f"line {lineno}: invalid JSON at column {err.colno}: {err.msg}")
            continue
        if not isinstance(obj, dict):
            add(lineno, ErrorType.NOT_AN_OBJECT.value, f"line {lineno}: a record must be a JSON object, got {_kind(obj)}")
            continue
        columns.update(obj)
        rec_fmt = detect_record_format(obj)
        if rec_fmt is None:
            add(
                lineno,
                ErrorType.UNKNOWN_FORMAT.value,
                f"line {lineno}: cannot tell the format from keys {sorted(obj)}; expected `input`+`output` (gliner2), "
                "`messages`, `prompt`+`completion`, `text`, `prompt`+`chosen`+`rejected` (preference) "
                "or `prompt` (prompt)",
            )
            continue
        if fmt is None:
            fmt, first_line = rec_fmt, lineno
            if expected is not None and fmt not in expected:
                if purpose:
                    msg = f"dataset is `{fmt.value}` but {purpose} needs one of {describe_formats(expected)}"
                else:
                    msg = f"dataset is `{fmt.value}`; expected one of {describe_formats(expected)}"
                add(0, ErrorType.FORMAT_NOT_ACCEPTED.value, msg)
        elif rec_fmt is not fmt:
            add(
                lineno,
                ErrorType.MIXED_FORMATS.value,
                f"line {lineno} is `{rec_fmt.value}` but line {first_line} is `{fmt.value}`; one dataset has one format",
            )
            continue
        p = _Problems()
        _CHECKERS[fmt](obj, p)
        for type_, msg in p:
            add(lineno, type_, f"line {lineno}: {msg}")
        lengths.append(record_chars(obj, fmt))
        if fmt is DatasetFormat.GLINER2:
            g2.add(obj, lineno)

    if report.num_records == 0:
        add(0, ErrorType.EMPTY_FILE.value, "the file has no records; a dataset is one JSON object per line")
    if fmt is DatasetFormat.GLINER2 and g2.first_empty_entities_line and not g2.entity_labels:
        line = g2.first_empty_entities_line
        add(
            line,
            ErrorType.EMPTY_ENTITIES.value,
            f'line {line}: `output.entities` is {{}} and no record of this dataset names an entity type, so there is '
            'nothing to learn; list the types, e.g. {"entities": {"person": [], "location": []}}',
        )
    report.format = fmt
    report.columns = sorted(columns)
    if lengths:
        report.stats = {"chars": _length_stats(lengths)}
        if fmt is DatasetFormat.GLINER2:
            report.stats.update(g2.to_dict())
    return report


def iter_records(path: str | os.PathLike) -> Iterator[dict]:
    """Yield each record (a dict) of a JSONL file, skipping blank lines.

    Raises:
        DatasetError: a line is not UTF-8, not JSON or not an object (validate the file first).
    """
    for lineno, text in _lines(path):
        if isinstance(text, UnicodeDecodeError):
            raise DatasetError(f"{path}: line {lineno}: not UTF-8 (byte {text.start})")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: line {lineno}: invalid JSON at column {err.colno}: {err.msg}") from err
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: line {lineno}: a record must be a JSON object, got {_kind(obj)}")
        yield obj
