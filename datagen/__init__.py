"""Generators of the synthetic data shipped with felix_train (`felix_train/data/builtin/`).

Run from the repository root; nothing in the installed package imports this folder (the package reads the
generated files only).

- `make_quickstart_ner.py`: writes `felix-ner-quickstart.jsonl` (`python datagen/make_quickstart_ner.py`), from
  `ner_lexicons.py` (word lists), `ner_samplers.py` (an entity sampler per label) and `ner_templates.py`
  (the sentences).
"""
