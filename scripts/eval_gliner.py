#!/usr/bin/env python
"""`felix-train eval --json` under its old name: python scripts/eval_gliner.py SOURCE TEST.jsonl [--threshold T]
[--labels-map A=B,C=B] [--limit N]. SOURCE is a job id, a job folder, a model folder or a catalog id;
the figures are `felix_train.evaluate.ner`'s. `resolve_model_dir` and `load_records` stay for old callers."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from felix_train.cli import main
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from felix_train.cli import main


def resolve_model_dir(source: str) -> Path:
    """The folder holding the GLiNER2 weights SOURCE names (`merged/` of a LoRA job); SystemExit when none."""
    from felix_train.models.source import SourceNotFound, resolve_source

    try:
        ref = resolve_source(source)
    except SourceNotFound as err:
        raise SystemExit(f"error: {err}") from None
    if ref.weights is None:
        raise SystemExit(f"error: no GLiNER2 model (a folder with config.json) at {source}")
    return ref.weights


def load_records(path: str | Path, limit: int | None = None) -> list[dict]:
    """`{"input", "entities"}` of the first `limit` gliner2-format records of `path`."""
    from felix_train.evaluate import read_records
    from felix_train.evaluate.ner import ner_records

    return ner_records(read_records(path, limit)[1])


if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:], "--json"]))
