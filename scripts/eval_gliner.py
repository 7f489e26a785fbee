#!/usr/bin/env python
"""Exact-match NER evaluation of a GLiNER2 model on a gliner2-format JSONL file.

Usage:
    python scripts/eval_gliner.py MODEL_DIR TEST.jsonl [--threshold 0.5]
        [--labels person location ...] [--limit N] [--batch-size 16] [--out FILE]
        [--predictions FILE]

MODEL_DIR is a saved GLiNER2 model folder, a felix job's `model/` folder (a LoRA
job keeps the merged model in `model/merged/`, which is preferred when present),
a job folder (`.../jobs/<id>`), or a bare job id resolved as
`$FELIX_HOME/jobs/<id>/model` (`$FELIX_HOME` defaults to `~/.felix`).

Each record is `{"input": text, "output": {"entities": {label: [mention, ...]}}}`;
`"entities": {}` means no entities. The label set is the union of the labels
named in the file unless `--labels` is given. Scoring (felix_train.metrics_ner):
per record and label, multisets of mention texts, exact match, case-sensitive,
whitespace-normalised. The JSON report goes to stdout (and to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

try:
    from felix_train.metrics_ner import mentions_of, score_entities
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from felix_train.metrics_ner import mentions_of, score_entities


def _felix_home() -> Path:
    return Path(os.environ.get("FELIX_HOME", "~/.felix")).expanduser()


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model_dir(spec: str) -> Path:
    """Find the loadable GLiNER2 folder for a path, job folder or job id."""
    candidates: list[Path] = []
    path = Path(spec).expanduser()
    if path.is_dir():
        candidates.append(path)
    elif os.sep not in spec and "/" not in spec:
        candidates.append(_felix_home() / "jobs" / spec / "model")
    else:
        raise SystemExit(f"error: model dir not found: {spec}")

    tried: list[str] = []
    for base in candidates:
        # A job folder: descend into model/.
        if not _is_model_dir(base) and (base / "model").is_dir():
            base = base / "model"
        # A LoRA job: the merged full model sits in model/merged/.
        for option in (base / "merged", base):
            tried.append(str(option))
            if _is_model_dir(option):
                return option
    raise SystemExit(
        "error: no GLiNER2 model (a folder with config.json) found; tried: " + ", ".join(tried)
    )


def load_records(path: Path, limit: int | None = None) -> list[dict]:
    records: list[dict] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"error: {path}:{lineno}: invalid JSON: {exc}") from None
            text = rec.get("input", rec.get("text"))
            if not isinstance(text, str):
                raise SystemExit(f"error: {path}:{lineno}: record has no string 'input'")
            output = rec.get("output") or {}
            entities = output.get("entities") if isinstance(output, dict) else None
            if entities is None:
                entities = {}
            if not isinstance(entities, dict):
                raise SystemExit(f"error: {path}:{lineno}: output.entities must be an object")
            records.append({"input": text, "entities": entities})
            if limit is not None and len(records) >= limit:
                break
    return records


def load_model(model_dir: Path):
    """GLiNER2 for span checkpoints; AutoExtractor for any other saved architecture."""
    architecture = None
    try:
        architecture = json.loads((model_dir / "config.json").read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        pass
    if architecture is None or str(architecture).strip().lower() == "span":
        from gliner2 import GLiNER2

        model = GLiNER2.from_pretrained(str(model_dir))
    else:
        from gliner2 import AutoExtractor

        model = AutoExtractor.from_pretrained(str(model_dir))
    model.eval()
    return model


def predict(model, texts: list[str], labels: list[str], threshold: float, batch_size: int) -> list[dict]:
    """One `{label: [mention, ...]}` per text.

    `include_spans=True` keeps repeated mentions of the same text at different
    offsets (the plain-string payload de-duplicates them case-insensitively).
    """
    import torch

    preds: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            results = model.batch_extract_entities(
                chunk, labels, batch_size=batch_size, threshold=threshold, include_spans=True
            )
            for res in results:
                ents = (res or {}).get("entities") or {}
                preds.append({label: mentions_of(ents.get(label)) for label in labels})
    return preds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="model folder, job folder, or job id under $FELIX_HOME/jobs")
    ap.add_argument("test_file", type=Path, help="gliner2-format JSONL")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--labels", nargs="+", default=None,
                    help="label set (space- or comma-separated); default: union of labels in the file")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N records")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--predictions", type=Path, default=None,
                    help="write per-record gold/pred JSONL here")
    args = ap.parse_args(argv)

    records = load_records(args.test_file, args.limit)
    if args.labels:
        labels = sorted({lab.strip() for item in args.labels for lab in item.split(",") if lab.strip()})
    else:
        labels = sorted({lab for rec in records for lab in rec["entities"]})
    if not labels:
        raise SystemExit("error: no labels in the file; pass --labels")

    model_dir = resolve_model_dir(args.model_dir)
    t0 = time.perf_counter()
    model = load_model(model_dir)
    load_s = time.perf_counter() - t0

    texts = [rec["input"] for rec in records]
    t0 = time.perf_counter()
    preds = predict(model, texts, labels, args.threshold, max(1, args.batch_size)) if texts else []
    infer_s = time.perf_counter() - t0

    gold = [rec["entities"] for rec in records]
    report = score_entities(gold, preds, labels=labels)
    report = {
        "model_dir": str(model_dir),
        "test_file": str(args.test_file),
        "threshold": args.threshold,
        **report,
        "seconds": {"load": round(load_s, 3), "inference": round(infer_s, 3)},
    }

    if args.predictions:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        with open(args.predictions, "w", encoding="utf-8") as fh:
            for text, g, p in zip(texts, gold, preds):
                fh.write(json.dumps({"input": text, "gold": {k: mentions_of(g.get(k)) for k in labels},
                                     "pred": p}, ensure_ascii=False) + "\n")

    out = json.dumps(report, indent=2, ensure_ascii=False)
    print(out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(out + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
