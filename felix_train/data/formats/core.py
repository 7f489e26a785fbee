"""The common core of the dataset formats: the format enum, what each algorithm reads, detection of a
record's format, the error and report types, and the small checks every format family uses.

The family modules (`chat`, `preference`, `prompt`, `ner`) check one record each into a `_Problems`;
`validate` drives them over a file. Pure Python: no torch, no gliner2 import.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from felix_train.catalog import Algorithm, ModelFamily


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


class ErrorType(str, Enum):
    """The `type` of a `LineError`: stable names that tests, the API and clients can match on."""

    EMPTY_FILE = "empty_file"  # line 0: the file holds no record
    FORMAT_NOT_ACCEPTED = "format_not_accepted"  # line 0: the dataset's format is not in `expected`
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"  # a key twice in one JSON object (json would keep the last silently)
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


def _require_all(p: _Problems, obj: dict, *keys: str) -> bool:
    """True when `obj` has every key; reports each missing one (not only the first)."""
    return all([_require(p, obj, key) for key in keys])


def _check_string(p: _Problems, value: Any, path: str, *, allow_empty: bool = False) -> bool:
    if not isinstance(value, str):
        p.wrong_type(path, value, "a string")
        return False
    if not allow_empty and not value.strip():
        p.add(ErrorType.EMPTY_VALUE, f"`{path}` is empty")
        return False
    return True
