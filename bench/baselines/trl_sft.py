#!/usr/bin/env python
"""The plain TRL script a user would write by hand for LoRA SFT: the baseline felix's SFT is measured against.

Usage:
    python bench/baselines/trl_sft.py --model DIR --data CHATS.jsonl --output-dir DIR
        [--lr 2e-4] [--batch-size 8] [--max-length 512] [--epochs 1] [--max-steps -1]
        [--lora-r 16] [--lora-alpha 32] [--lora-dropout 0.05] [--target-modules all-linear]
        [--warmup 0.1] [--weight-decay 0.01] [--seed 42] [--logging-steps 10] [--losses-out FILE]
        [--chat-template FILE] [--bf16]

TRL 1.16 defaults everywhere except what must match the felix job being compared:
the hyperparameters above, `assistant_only_loss=True` (felix's `completion_only_loss: true`;
the tiny model's chat template has `{% generation %}` markers), and, on CPU, `bf16=False` and
`gradient_checkpointing=False` (TRL turns both on by default). Data is loaded the usual way
(`datasets.load_dataset("json")`), tokenized by SFTTrainer, padded per batch, random order.
`--losses-out` writes the per-step training losses (with `--logging-steps 1`) for parity checks.
`--chat-template FILE`: what a user does when the model's template has no `{% generation %}` markers
(SmolLM2's has none, and TRL refuses `assistant_only_loss` without them): load the tokenizer, set a
template with markers that renders the same text, pass it as `processing_class`.
`--bf16`: TRL's own default precision, which on CPU also needs `use_cpu=True`.
"""

from __future__ import annotations

import argparse
import json


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="all-linear")
    p.add_argument("--warmup", type=float, default=0.1, help="warmup_steps: a float < 1 is a ratio of the steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--losses-out", default=None)
    p.add_argument("--no-save", action="store_true", help="skip saving the adapter at the end")
    p.add_argument("--chat-template", default=None, help="a chat template file with {% generation %} markers")
    p.add_argument("--bf16", action="store_true", help="bf16=True (TRL's default; use_cpu=True on a CPU)")
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    """The SFTTrainer, ready to `.train()`."""
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=args.data, split="train")
    targets = args.target_modules if args.target_modules == "all-linear" else args.target_modules.split(",")
    config = SFTConfig(
        output_dir=args.output_dir,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        max_length=args.max_length,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        seed=args.seed,
        logging_steps=args.logging_steps,
        assistant_only_loss=True,
        bf16=args.bf16,
        use_cpu=args.bf16 and not _has_gpu(),
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
    )
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    tokenizer = None
    if args.chat_template:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        with open(args.chat_template, encoding="utf-8") as fh:
            tokenizer.chat_template = fh.read()
    return SFTTrainer(model=args.model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse_args(argv)
    trainer = build(args)
    trainer.train()
    if not args.no_save:
        trainer.save_model()
    if args.losses_out:
        losses = {row["step"]: row["loss"] for row in trainer.state.log_history if "loss" in row}
        with open(args.losses_out, "w", encoding="utf-8") as fh:
            json.dump(losses, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
