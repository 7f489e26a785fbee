"""Seeded dataset generators: synthetic, verifiable training and held-out data written as felix JSONL.

- `arithmetic`: one- and two-step arithmetic word problems as GRPO prompt records (`prompt`, `answer`), with
  train/test splits that share no problem; `python -m felix_train.data.generators.arithmetic --help`.

Generators use the standard library only (no torch), so they run anywhere the spec validator runs.
"""
