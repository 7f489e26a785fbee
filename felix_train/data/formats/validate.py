"""The line-level validation driver: `validate_file` streams a JSONL file once and reports every bad line;
`check_record` checks one record; `iter_records` reads the records of a validated file.

Lines are read by `felix_train.jsonl.iter_jsonl_lines`, the one JSONL reader, which yields a bad line's
error and goes on, so every problem of a file is reported at once. Each format's record check lives in its
family module; `_CHECKERS` is the table from format to check.
"""

from __future__ import annotations

import math
import os
from array import array
from typing import Any, Iterator

from felix_train.data.formats.chat import _check_messages_record, _check_prompt_completion_record, _check_text_record
from felix_train.data.formats.core import (
    DatasetFormat,
    ErrorType,
    LineError,
    ValidationReport,
    _kind,
    _Problems,
    describe_formats,
    detect_record_format,
)
from felix_train.data.formats.ner import _check_gliner2_record, _Gliner2Stats
from felix_train.data.formats.preference import _check_preference_record
from felix_train.data.formats.prompt import _check_prompt_record
from felix_train.errors import DatasetError
from felix_train.jsonl import JSONLError, iter_jsonl, iter_jsonl_lines


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

    for lineno, obj in iter_jsonl_lines(path):
        report.num_records += 1
        if isinstance(obj, JSONLError):
            add(lineno, ErrorType(obj.kind).value, f"line {lineno}: {obj.message}")
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
    try:
        for lineno, obj in iter_jsonl(path):
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}: line {lineno}: a record must be a JSON object, got {_kind(obj)}")
            yield obj
    except JSONLError as err:
        raise DatasetError(f"{path}: line {err.line}: {err.message}") from err
