"""`make quality`: what felix's defaults learn, on held-out data, beside what a user would train otherwise.

- `run.py`: the runner (`python bench/quality/run.py [--only ...] [--seeds ...] [--quick]`, what `make quality`
  calls); its docstring lists the parts.
- `split.py`: the unseen-mention split of a NER file (no test mention is a training mention).
- `ner.py`: felix's defaults, gliner2's `ExtractorTrainer` and the token-classification recipe on that split.
- `proxy.py`: the trained-head proxy (quickstart-trained GLiNER2, fine-tuned on WNUT-17 from its checkpoint UUID).
- `rl.py`, `rl_data.py`: SFT, DPO and GRPO on SmolLM2, base → trained on held-out data, and their data files.
- `harness.py`: the context and felix's CLI run as a user runs it, one process each (`felix-train datasets add`,
  `python -m felix_train SPEC`, `felix-train eval --json`).
- `report.py`: the printed tables and ratio lines.
- `bio.py`: NER records ↔ BIO word tags for the token-classification baseline.
- `baselines/`: `gliner2_trainer.py` (gliner2's own trainer, its defaults) and `token_classification.py`
  (the plain Hugging Face recipe).
"""
