"""One JSONL reader with line numbers, for every part that reads a JSONL file.

`iter_jsonl(path)` yields `(line_number, record)` for every non-blank line (1-based, a UTF-8 BOM
on the first line ignored). A line that is not JSON raises `JSONLError` naming the file, the line
and the column; the caller turns it into its own error (a `DatasetError`, a 422 item, a CLI
message) with `raise ... from err`. Pure Python: no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JSONLError(ValueError):
    """A line of a JSONL file that is not valid JSON (or not UTF-8)."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path = Path(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path.name} line {line}: {message}")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """`(line_number, record)` for each non-blank line of `path`; `JSONLError` on the first bad line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise JSONLError(path, lineno, f"not UTF-8 (byte {err.start}); save the file as UTF-8") from err
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as err:
                raise JSONLError(path, lineno, f"invalid JSON at column {err.colno}: {err.msg}") from err
            except RecursionError as err:
                raise JSONLError(path, lineno, "JSON nested too deeply") from err


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """Every `(line_number, record)` of `path` (see `iter_jsonl`)."""
    return list(iter_jsonl(path))
