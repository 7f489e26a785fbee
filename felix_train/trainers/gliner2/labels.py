"""Entity labels as a GLiNER2 model is asked for them: verbalised names and descriptions, mapped both ways.

GLiNER2 reads a label as text next to the sentence, so a dataset's tag names (`creative-work`,
`B-PER`, `WORK_OF_ART`) are asked as the words they stand for (`creative work`, `person`,
`work of art`; `verbalize_label`). `label_prompts` gives each dataset label its prompt name
(labels whose names would collide keep their own); the trainer renames the records it trains and
evaluates on (`prompt_records`) and maps predictions back, so metrics, saved thresholds and
`felix-train eval` speak the dataset's labels. `felix_model.json` keeps the map (`label_prompts`)
and the descriptions (`label_descriptions`), both keyed by dataset label.

Pure Python: `felix-train eval` and the trainer both import it.
"""

from __future__ import annotations

import re
from typing import Iterable

# Tag abbreviations of the common NER schemes (CoNLL, OntoNotes, WNUT), by lower-cased name.
ABBREVIATIONS = {
    "per": "person", "pers": "person", "org": "organization", "loc": "location", "misc": "miscellaneous",
    "gpe": "geopolitical entity", "fac": "facility", "norp": "nationality or religious or political group",
    "evt": "event", "prod": "product", "corp": "corporation",
}
_BIO = re.compile(r"^[BI]-(?=[A-Za-z])")
_CAMEL = re.compile(r"(?<=[a-z]{2})(?=[A-Z][a-z])")


def verbalize_label(label: str) -> str:
    """The words a tag name stands for: `creative-work` → `creative work`, `B-PER` → `person`, `WORK_OF_ART` →
    `work of art`, `creativeWork` → `creative work`; a plain word comes back as it is."""
    text = _BIO.sub("", label.strip())
    if not re.search(r"[\s_-]", text) and _CAMEL.search(text):
        text = _CAMEL.sub(" ", text).lower()
    text = " ".join(re.sub(r"[_-]+", " ", text).split())
    if text.isupper() or text.lower() in ABBREVIATIONS:
        text = text.lower()
    text = ABBREVIATIONS.get(text, text)
    return text or label


def label_prompts(labels: Iterable[str], *, verbalize: bool = True) -> dict[str, str]:
    """{dataset label: the name the model is asked} for every label; labels whose prompt names would collide
    (with each other, or with another dataset label) keep their own names."""
    labels = list(dict.fromkeys(labels))
    prompts = {label: verbalize_label(label) if verbalize else label for label in labels}
    while True:
        taken: dict[str, list[str]] = {}
        for label, prompt in prompts.items():
            taken.setdefault(prompt, []).append(label)
        clash = {label for names in taken.values() if len(names) > 1 for label in names if prompts[label] != label}
        if not clash:
            return prompts
        for label in clash:
            prompts[label] = label


def prompt_records(records: list[dict], prompts: dict[str, str], descriptions: dict[str, str]) -> list[dict]:
    """Copies of gliner2 records with entity labels renamed to their prompt names, and `descriptions` (by
    dataset label) on every entity record for the labels it lists; other records pass unchanged."""
    if all(k == v for k, v in prompts.items()) and not descriptions:
        return records
    out = []
    for rec in records:
        output = rec.get("output")
        if not isinstance(output, dict) or not isinstance(output.get("entities"), dict):
            out.append(rec)
            continue
        ents = {prompts.get(k, k): v for k, v in output["entities"].items()}
        descs = {**(output.get("entity_descriptions") or {}),
                 **{k: d for k, d in descriptions.items() if k in output["entities"]}}
        new = {**output, "entities": ents}
        if descs:
            new["entity_descriptions"] = {prompts.get(k, k): d for k, d in descs.items()}
        out.append({**rec, "output": new})
    return out


def dataset_descriptions(records: Iterable[dict]) -> dict[str, str]:
    """The first description each label has in the records' `entity_descriptions`."""
    found: dict[str, str] = {}
    for rec in records:
        descs = (rec.get("output") or {}).get("entity_descriptions")
        if isinstance(descs, dict):
            for label, desc in descs.items():
                if isinstance(desc, str) and desc.strip():
                    found.setdefault(label, desc)
    return found


def asked_labels(labels: list[str], info: dict) -> dict[str, str]:
    """{label: the name to ask a saved model for} from its `felix_model.json` (`label_prompts`, and
    `label_verbalize` for labels it was not trained on); an unknown or colliding name stays as it is."""
    saved = info.get("label_prompts") or {}
    verbalize = bool(info.get("label_verbalize"))
    wanted = {label: saved.get(label) or (verbalize_label(label) if verbalize else label) for label in labels}
    counts: dict[str, int] = {}
    for prompt in wanted.values():
        counts[prompt] = counts.get(prompt, 0) + 1
    return {label: (prompt if counts[prompt] == 1 and (prompt == label or prompt not in labels) else label)
            for label, prompt in wanted.items()}
