#!/usr/bin/env python
"""Perplexity of a decoder LLM on a held-out chat file: the quality measure of an SFT job. JSON out.

Usage:
    python scripts/eval_sft.py MODEL HELDOUT.jsonl [--all-tokens] [--max-length 1024] [--skip N] [--limit N]
        [--batch-size 8] [--base DIR] [--device cpu|cuda] [--out FILE]

MODEL is a job id, a job folder, a model or adapter folder, or a catalog id (the base model, for a
before/after comparison): see `scripts/eval_lm_common.py`. Records are the SFT formats felix trains on
(`messages`, `prompt`/`completion`, `text`), tokenized exactly as training does
(`felix_train.trainers.sft.tokenize_record`): by default only the assistant replies / completions are
scored (what `completion_only_loss: true` trains), `--all-tokens` scores every token. Records longer than
`--max-length` are cut there (counted in `truncated`).

Reports `loss` (mean negative log-likelihood per scored token, nats), `perplexity` (exp of it),
`token_accuracy` (top-1 next-token accuracy on the scored tokens), `tokens`, `records`, and the same
over the records of each dataset format. For a held-out split of a file also used for training, pass
`--skip` (e.g. train on the first 800 lines of dolly, evaluate with `--skip 800`).
"""

from __future__ import annotations

import argparse
import math

from eval_lm_common import Timer, emit, load, meta, pick_device, read_jsonl, resolve_model_arg, sequence_scores


def record_format(record: dict) -> str:
    return "messages" if "messages" in record else "prompt_completion" if "prompt" in record else "text"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--all-tokens", action="store_true", help="score every token, not only the replies")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--skip", type=int, default=0, help="leave out the first N records")
    p.add_argument("--limit", type=int, default=None, help="score at most N records")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--base", default=None, help="base model folder under an adapter (default: from the adapter)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from trl.chat_template_utils import has_generation_markers

    from felix_train.trainers.sft import tokenize_record, training_chat_template

    ref = resolve_model_arg(args.model, args.base)
    device = pick_device(args.device)
    records = read_jsonl(args.data, skip=args.skip, limit=args.limit)
    if not records:
        raise SystemExit(f"error: no records in {args.data} after --skip {args.skip}")
    with Timer() as loading:
        model, tokenizer = load(ref, device)
    completion_only = not args.all_tokens
    if completion_only and any("messages" in r for r in records) and not (
            isinstance(tokenizer.chat_template, str) and has_generation_markers(tokenizer.chat_template)):
        tokenizer.chat_template = training_chat_template(tokenizer, args.model)  # renders the same text

    rows, formats, truncated = [], [], 0
    for record in records:
        tokens = tokenize_record(record, tokenizer, completion_only=completion_only)
        ids, labels = tokens["input_ids"], tokens["labels"]
        if len(ids) > args.max_length:
            ids, labels, truncated = ids[:args.max_length], labels[:args.max_length], truncated + 1
        rows.append((ids, labels))
        formats.append(record_format(record))
    with Timer() as scoring:
        scores = sequence_scores(model, rows, pad_id=tokenizer.pad_token_id, batch_size=args.batch_size,
                                 device=device)

    def summary(selected: list[dict]) -> dict:
        tokens = sum(s["tokens"] for s in selected)
        nll = -sum(s["logp"] for s in selected)
        loss = nll / tokens if tokens else float("nan")
        return {"records": len(selected), "tokens": tokens, "loss": round(loss, 6),
                "perplexity": round(math.exp(loss), 4) if tokens and loss < 700 else None,
                "token_accuracy": round(sum(s["correct"] for s in selected) / tokens, 6) if tokens else None}

    report = {"eval": "sft_perplexity", **meta(ref, args.data, device, skip=args.skip),
              "scored": "replies / completions" if completion_only else "all tokens",
              **summary(scores), "truncated": truncated, "no_scored_tokens": sum(1 for s in scores if not s["tokens"]),
              "by_format": {f: summary([s for s, g in zip(scores, formats) if g == f]) for f in dict.fromkeys(formats)},
              "seconds": {"load": loading.seconds, "score": scoring.seconds}}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
