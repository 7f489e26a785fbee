#!/usr/bin/env python
"""The plain gliner2 script a user would write by hand: `ExtractorTrainer` called directly (the GLiNER2 baseline).

Usage:
    python bench/baselines/gliner2_direct.py --model DIR --data TRAIN.jsonl --output-dir DIR
        [--lr 2e-3] [--encoder-lr LR] [--batch-size 8] [--epochs 1] [--max-steps -1] [--full]
        [--lora-r 16] [--lora-alpha 32] [--lora-dropout 0.05] [--warmup 0.1] [--weight-decay 0.01] [--seed 42]

gliner2 2.1.0 defaults everywhere (its data validation pass, DataLoader workers, per-step logging, the
final checkpoint) except what must match the felix job being compared: the hyperparameters above and
`eval_strategy="no"` (the felix job in the benchmark has no eval split either). `--lr` is the task-head
and LoRA learning rate (gliner2's `task_lr`); `--encoder-lr` defaults to lr / 50
(gliner2's own ratio: task 5e-4, encoder 1e-5); the bench passes felix's.
"""

from __future__ import annotations

import argparse
import json


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--encoder-lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from gliner2 import GLiNER2
    from gliner2.training.trainer import ExtractorTrainer, TrainingConfig

    with open(args.data, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    model = GLiNER2.from_pretrained(args.model)
    config = TrainingConfig(
        output_dir=args.output_dir,
        num_epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        task_lr=args.lr,
        encoder_lr=args.encoder_lr if args.encoder_lr is not None else args.lr / 50,
        warmup_ratio=args.warmup,
        weight_decay=args.weight_decay,
        seed=args.seed,
        eval_strategy="no",
        use_lora=not args.full,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
    )
    trainer = ExtractorTrainer(model, config, train_data=records)
    trainer.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
