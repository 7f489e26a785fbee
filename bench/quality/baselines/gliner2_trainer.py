#!/usr/bin/env python
"""gliner2's own `ExtractorTrainer` with its own defaults: what a gliner2 user trains (the GLiNER2 quality baseline).

Usage:
    python bench/quality/baselines/gliner2_trainer.py --model BASE_DIR --data TRAIN.jsonl --output-dir DIR
        [--full] [--seed 42] [--epochs N]

gliner2 2.1.0's `TrainingConfig` defaults (10 epochs, batch 2, task lr 5e-4, encoder lr 1e-5, linear schedule
with 10 % warmup, weight decay 0.01, LoRA r 16 / alpha 32 / dropout 0 on its default targets when LoRA) except
`eval_strategy="no"` (no eval data is given, and its default would write a checkpoint every 500 steps) and
`--epochs` where asked. After training, the model (LoRA merged into the base, as a deployable GLiNER2) is saved
to `DIR/model`, which `felix-train eval DIR/model TEST.jsonl --threshold 0.5` scores; `DIR/train.json` holds the
training time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--full", action="store_true", help="full fine-tuning (gliner2's default); LoRA otherwise")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=None, help="override gliner2's default of 10 epochs")
    args = p.parse_args(argv)
    from gliner2 import GLiNER2
    from gliner2.training.trainer import ExtractorTrainer, TrainingConfig

    with open(args.data, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    model = GLiNER2.from_pretrained(args.model)
    extra = {"num_epochs": args.epochs} if args.epochs else {}
    config = TrainingConfig(output_dir=args.output_dir, seed=args.seed, eval_strategy="no", use_lora=not args.full,
                            **extra)
    t0 = time.time()
    trainer = ExtractorTrainer(model, config, train_data=records)
    trainer.train()
    train_s = time.time() - t0
    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):  # a PeftModel: fold the adapter in, as felix's own eval loads one
        trained = trained.merge_and_unload()
        trained._lora_layers = {}
    trained.save_pretrained(str(Path(args.output_dir) / "model"))
    defaults = {k: getattr(config, k) for k in ("num_epochs", "batch_size", "task_lr", "encoder_lr", "warmup_ratio",
                                                "weight_decay", "lora_r", "lora_alpha", "lora_dropout")}
    Path(args.output_dir, "train.json").write_text(json.dumps({"train_s": round(train_s, 1), "config": defaults,
                                                               "records": len(records)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
