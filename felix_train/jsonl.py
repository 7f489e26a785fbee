"""One JSONL reader with line numbers, for every part that reads a JSONL file.

`iter_jsonl(path)` yields `(line_number, record)` for every non-blank line (1-based, a UTF-8 BOM
on the first line ignored). A line that is not JSON raises `JSONLError` naming the file, the line
and the column; the caller turns it into its own error (a `DatasetError`, a 422 item, a CLI
message) with `raise ... from err`.

`iter_jsonl_lines(path)` is the same reader for a caller that reports every bad line at once (the
dataset validator): a bad line yields its `JSONLError` in place of the record, and reading goes on.
`keep_lines(raw, keep)` filters a file's lines by their objects (the cut of a resumed job's metrics and events).
`JSONLError.kind` says what is wrong (`invalid_utf8`, `invalid_json`, or `duplicate_key`: a key twice in one
object, which `json` would read as the last value without a word). `reject_duplicate_keys` is the
`object_pairs_hook` that refuses such a key, for any JSON reader (specs too). Pure Python: no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
DUPLICATE_KEY = "duplicate_key"


class DuplicateKeyError(ValueError):
    """A key repeated in one JSON object (or YAML mapping); `line` where the reader knows it."""

    def __init__(self, key: Any, line: int | None = None):
        self.key = key
        self.line = line
        super().__init__(f"duplicate key {key!r}" + (f" at line {line}" if line else ""))


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(..., object_pairs_hook=reject_duplicate_keys)`: the object, or `DuplicateKeyError`."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


class JSONLError(ValueError):
    """A line of a JSONL file that is not valid JSON (`kind` "invalid_json"), not UTF-8 ("invalid_utf8") or
    repeats a key in one object ("duplicate_key")."""

    def __init__(self, path: str | os.PathLike, line: int, message: str, kind: str = INVALID_JSON):
        self.path = Path(path)
        self.line = line
        self.message = message
        self.kind = kind
        super().__init__(f"{self.path.name} line {line}: {message}")


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """`(line_number, record or JSONLError)` for each non-blank line of `path`; never stops at a bad line.

    A line that is not UTF-8 or not JSON yields a `JSONLError` (with the decode error as its
    `__cause__`) instead of a record; the next lines are read as usual. The byte number of a
    `not UTF-8` message counts from the start of the line as stored (a first-line BOM included).
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            error: JSONLError | None = None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                error = JSONLError(path, lineno, f"not UTF-8 (byte {err.start}); save the file as UTF-8", INVALID_UTF8)
                error.__cause__ = err
            if error is not None:
                yield lineno, error
                continue
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if not text.strip():
                continue
            try:
                record = json.loads(text, object_pairs_hook=reject_duplicate_keys)
            except DuplicateKeyError as err:
                error = JSONLError(path, lineno, f"duplicate key {json.dumps(err.key, ensure_ascii=False)} in one "
                                   "object; a key may appear once (the second would silently win): remove one",
                                   DUPLICATE_KEY)
                error.__cause__ = err
            except json.JSONDecodeError as err:
                error = JSONLError(path, lineno, f"invalid JSON at column {err.colno}: {err.msg}")
                error.__cause__ = err
            except RecursionError as err:
                error = JSONLError(path, lineno, "JSON nested too deeply")
                error.__cause__ = err
            yield lineno, (record if error is None else error)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """`(line_number, record)` for each non-blank line of `path`; `JSONLError` on the first bad line."""
    for lineno, value in iter_jsonl_lines(path):
        if isinstance(value, JSONLError):
            raise value
        yield lineno, value


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """Every `(line_number, record)` of `path` (see `iter_jsonl`)."""
    return list(iter_jsonl(path))


def keep_lines(raw: bytes, keep: Callable[[dict], bool]) -> tuple[list[bytes], int]:
    """(the lines of a JSONL file's bytes whose object `keep` accepts, each ending in a newline; how many
    others were dropped). A blank line is skipped; a torn or unreadable line, or one that is not an object,
    counts as dropped. For the job files that a resumed run cuts back to its checkpoint's step."""
    kept: list[bytes] = []
    dropped = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and bool(keep(record))
        except ValueError:
            ok = False
        if ok:
            kept.append(line + b"\n")
        else:
            dropped += 1
    return kept, dropped
