#!/usr/bin/env python
"""The plain TRL script a user would write by hand for LoRA DPO: the baseline felix's DPO is measured against.

Usage:
    python bench/baselines/trl_dpo.py --model DIR --data PAIRS.jsonl --output-dir DIR
        [--lr 2e-4] [--batch-size 8] [--max-length 1024] [--epochs 1] [--max-steps -1] [--beta 0.1]
        [--lora-r 16] [--lora-alpha 32] [--lora-dropout 0.05] [--target-modules all-linear]
        [--warmup 0.1] [--weight-decay 0.01] [--seed 42] [--logging-steps 10] [--bf16]

TRL 1.16 `DPOTrainer` defaults everywhere (sigmoid loss, reference = the model with the PEFT adapter
disabled since no `ref_model` is given, dropout disabled, padded batches in random order) except what must
match the felix job being compared (the hyperparameters above) and, on CPU, `bf16=False` and
`gradient_checkpointing=False` (TRL turns both on by default; `--bf16` keeps TRL's bf16, with `use_cpu=True`
on a CPU). Data is loaded the usual way (`datasets.load_dataset("json")`: `prompt`/`chosen`/`rejected`),
tokenized by DPOTrainer.
"""

from __future__ import annotations

import argparse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="all-linear")
    p.add_argument("--warmup", type=float, default=0.1, help="warmup_steps: a float < 1 is a ratio of the steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--bf16", action="store_true", help="bf16=True (TRL's default; use_cpu=True on a CPU)")
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    """The DPOTrainer, ready to `.train()`."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=args.data, split="train")
    targets = args.target_modules if args.target_modules == "all-linear" else args.target_modules.split(",")
    config = DPOConfig(
        output_dir=args.output_dir,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        max_length=args.max_length,
        beta=args.beta,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        seed=args.seed,
        logging_steps=args.logging_steps,
        bf16=args.bf16,
        use_cpu=args.bf16 and not torch.cuda.is_available(),
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
    )
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    return DPOTrainer(model=args.model, args=config, train_dataset=dataset, peft_config=peft_config)


def main(argv=None) -> int:
    trainer = build(parse_args(argv))
    trainer.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
