"""Scoring a model on a test file: `felix-train eval SOURCE DATA.jsonl`, and `evaluate()` behind it.

SOURCE is a job id, a job folder, a model folder or a catalog base-model id (`source.py`). The data's
format (`felix_train.data.formats.detect_record_format`) picks the family and its figures:

> Format → module → figures

- `gliner2` → `ner.py`: per-label, micro and macro P/R/F1, exact match (the trainer's scorer);
- `messages`, `prompt_completion`, `text` → `lm.py`: loss, perplexity and token accuracy on the completions;
- `preference` → `preference.py`: DPO reward accuracy and margin against the reference, log-prob accuracies;
- `prompt` → `reward.py`: mean reward and numeric accuracy of greedy completions.

Every report is one JSON-ready dict: `eval` (which figures), `model` (the resolved SOURCE), `data`,
`format`, then the family's figures. torch, transformers and gliner2 load only inside the family modules.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from felix_train.catalog import ModelFamily
from felix_train.data.formats import DatasetFormat, detect_record_format
from felix_train.errors import DatasetError, FelixError
from felix_train.models.source import ModelRef, SourceNotFound, resolve_source
from felix_train.jsonl import JSONLError, iter_jsonl

__all__ = ["EVALS", "ModelRef", "SourceNotFound", "evaluate", "format_report", "read_records", "resolve_source"]

EVALS: dict[DatasetFormat, tuple[ModelFamily, str]] = {
    DatasetFormat.GLINER2: (ModelFamily.GLINER2, "felix_train.evaluate.ner:evaluate_ner"),
    DatasetFormat.MESSAGES: (ModelFamily.CAUSAL_LM, "felix_train.evaluate.lm:evaluate_lm"),
    DatasetFormat.PROMPT_COMPLETION: (ModelFamily.CAUSAL_LM, "felix_train.evaluate.lm:evaluate_lm"),
    DatasetFormat.TEXT: (ModelFamily.CAUSAL_LM, "felix_train.evaluate.lm:evaluate_lm"),
    DatasetFormat.PREFERENCE: (ModelFamily.CAUSAL_LM, "felix_train.evaluate.preference:evaluate_preference"),
    DatasetFormat.PROMPT: (ModelFamily.CAUSAL_LM, "felix_train.evaluate.reward:evaluate_reward"),
}
"""Which model family a data format is scored on, and the function that scores it."""


def read_records(data: str | os.PathLike, limit: int | None = None) -> tuple[DatasetFormat, list[tuple[int, dict]]]:
    """(the data's format, its first `limit` records as (line, record)).

    Formats scored by the same function may mix (chats beside prompt/completion records); others may not.

    Raises:
        DatasetError: the file cannot be read, a line is not a JSON object in a known format, or no record.
    """
    fmt, first, out = None, 0, []
    try:
        for line, record in iter_jsonl(data):
            if limit is not None and len(out) >= limit:
                break
            rec_fmt = detect_record_format(record)
            if rec_fmt is None:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise DatasetError(f"{data} line {line}: cannot tell the format from {keys}; expected "
                                   "`input`+`output` (NER), `messages`, `prompt`+`completion`, `text`, "
                                   "`prompt`+`chosen`+`rejected` or `prompt` records")
            if fmt is None:
                fmt, first = rec_fmt, line
            elif EVALS[rec_fmt][1] != EVALS[fmt][1]:
                raise DatasetError(f"{data} line {line} is `{rec_fmt.value}` but line {first} is `{fmt.value}`; "
                                   "score one kind of record per file")
            out.append((line, record))
    except JSONLError as err:
        raise DatasetError(f"{data} line {err.line}: {err.message}") from err
    except OSError as err:
        raise DatasetError(f"cannot read {data}: {err.strerror or err}") from err
    if fmt is None:
        raise DatasetError(f"{data} holds no record; a test file is one JSON object per line")
    return fmt, out


def evaluate(source: str | os.PathLike, data: str | os.PathLike, *, threshold: float | None = None,
             labels_map: dict[str, str] | str | None = None, limit: int | None = None,
             home: str | os.PathLike | None = None, decoding: str | None = None, **options: Any) -> dict:
    """Score SOURCE on DATA; the report as a dict (see the module docstring).

    Args:
        threshold, labels_map, decoding: NER only (see `ner.py`); `labels_map` as a dict or `"a=b,c=b"`.
        limit: score only the first `limit` records.
        home: `$FELIX_HOME` override, for job ids.
        options: passed to the family's function (`batch_size`, `device`, `max_length`, `beta`, ...).

    Raises:
        SourceNotFound, ModelNotAvailable: SOURCE names no usable model.
        DatasetError: DATA cannot be read, or its format does not fit the model's family.
    """
    if limit is not None and limit < 1:
        raise FelixError(f"--limit must be at least 1, got {limit}")
    fmt, records = read_records(data, limit)
    family, target = EVALS[fmt]
    ner_only = {"--threshold": threshold, "--labels-map": labels_map, "--decoding": decoding}
    if family is not ModelFamily.GLINER2 and any(v is not None for v in ner_only.values()):
        used = ", ".join(k for k, v in ner_only.items() if v is not None)
        raise FelixError(f"{used} apply to NER (gliner2-format) data; {data} holds `{fmt.value}` records")
    ref = resolve_source(source, home=home)
    if ref.family is None:
        raise SourceNotFound(f"cannot tell whether {ref.model_dir} holds a GLiNER2 or a causal LM model "
                             "(no felix_model.json, job spec or recognisable config.json)")
    if ref.family is not family:
        raise DatasetError(f"{data} holds `{fmt.value}` records, which need a {family.value} model, but "
                           f"{source} is a {ref.family.value} model; pick test data of its kind")
    if family is ModelFamily.GLINER2:
        options.update(threshold=threshold, labels_map=labels_map, decoding=decoding)
    module, func = target.split(":")
    report = getattr(importlib.import_module(module), func)(ref, records, **options)
    return {"eval": report.pop("eval"), "model": ref.describe(), "data": str(Path(data)), "format": fmt.value,
            **({"limit": limit} if limit is not None else {}), **report}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_report(report: dict) -> str:
    """A report as a few readable lines (what `felix-train eval` prints without `--json`)."""
    model = report.get("model") or {}
    lines = [f"{report.get('eval')}: {model.get('source')} ({model.get('family')}) on {report.get('data')}"]
    if report.get("eval") == "ner":
        lines.append(f"threshold {report['threshold']} ({report['threshold_source']}), decoding {report.get('decoding')} "
                     f"({report.get('decoding_source')}), {report['records']} records")
        header = f"{'label':<24} {'P':>7} {'R':>7} {'F1':>7} {'TP':>6} {'FP':>6} {'FN':>6}"
        lines.append(header)
        rows = [*report["per_label"].items(), ("micro", report["micro"])]
        for label, m in rows:
            lines.append(f"{label:<24} {m['precision']:>7.4f} {m['recall']:>7.4f} {m['f1']:>7.4f} "
                         f"{m['tp']:>6} {m['fp']:>6} {m['fn']:>6}")
        return "\n".join(lines)
    skip = {"eval", "model", "data", "by_format", "rewards", "samples", "seconds"}
    lines += [f"{key}: {_fmt(value)}" for key, value in report.items()
              if key not in skip and not isinstance(value, (dict, list))]
    return "\n".join(lines)
