#!/usr/bin/env python
"""The plain Hugging Face token-classification recipe a user would write instead of GLiNER2 (the NER baseline).

Usage:
    python bench/quality/baselines/token_classification.py --model ENCODER_DIR --train TRAIN.jsonl
        --test TEST.jsonl --output-dir DIR [--epochs 5] [--lr 1e-4] [--batch-size 16] [--seed 42]

`AutoModelForTokenClassification` on the encoder, BIO tags on first sub-words (`bench/quality/bio.py`), AdamW
1e-4, batch 16, 5 epochs, linear warmup over 10 % of the steps, the `Trainer`. The test predictions are decoded
to mention strings and scored with felix's exact-match scorer; `DIR/report.json` holds the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench/ and felix_train/


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--model", "--train", "--test", "--output-dir"):
        p.add_argument(flag, required=True)
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    import torch
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from bench.quality.bio import bio_tags, decode, entities_of, label_list
    from bench.quality.split import read_records
    from felix_train.metrics_ner import score_entities

    train, test = read_records(Path(args.train)), read_records(Path(args.test))
    labels = label_list(train)
    tok = AutoTokenizer.from_pretrained(args.model)

    def encode(words, tags=None, tensors=None):
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=256, return_tensors=tensors)
        firsts = [w is not None and (i == 0 or enc.word_ids()[i - 1] != w) for i, w in enumerate(enc.word_ids())]
        if tags is not None:
            enc["labels"] = [labels.index(tags[w]) if first else -100 for w, first in zip(enc.word_ids(), firsts)]
        return enc, firsts

    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    targs = TrainingArguments(output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=args.lr,
                              per_device_train_batch_size=args.batch_size, warmup_steps=0.1, lr_scheduler_type="linear",
                              seed=args.seed, save_strategy="no", report_to=[], logging_steps=20)
    data = [dict(encode(*bio_tags(r)[:2])[0]) for r in train]
    t0 = time.time()
    Trainer(model=model, args=targs, train_dataset=data, data_collator=DataCollatorForTokenClassification(tok)).train()
    train_s, t0 = time.time() - t0, time.time()
    model.eval()
    preds = []
    with torch.inference_mode():
        for record in test:
            words = record["input"].split()
            enc, firsts = encode(words, tensors="pt")
            ids = model(**enc).logits[0].argmax(-1).tolist()
            tags = ["O"] * len(words)
            for w, first, i in zip(enc.word_ids(), firsts, ids):
                if first:
                    tags[w] = labels[i]
            preds.append(decode(words, tags))
    report = score_entities([entities_of(r) for r in test], preds,
                            labels=sorted({lab for r in test for lab in entities_of(r)}))
    report.update(eval="ner", train_s=round(train_s, 1), predict_s=round(time.time() - t0, 1), tags=labels)
    Path(args.output_dir, "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"micro F1 {report['micro']['f1']:.4f} in {train_s:.0f} s of training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
