"""`engine.max_length` / `engine.length_policy` counted without torch: what the trainers do to long records.

The trainers apply the policy at run time (`trainers/gliner2/data.py` on words as gliner2 splits them,
`trainers/sft_data.py` on TRL's tokens); this module says the same thing before a job runs, for
`felix-train validate` (policy `error`: every over-long record refused with its file, line, length and
the limit) and for `felix-train estimate` (policies `truncate` / `drop`: what is kept, cut and left out,
per dataset, with the reason of each kind).

- `gliner2_word_splitter()`: gliner2's own word splitter (`gliner2.processing.word_splitter`), loaded from
  its file alone, so neither gliner2's package (which imports torch) nor torch is loaded.
- `Measured`: one record's length (and, for SFT, whether any trained token is left within the limit).
- `too_long_errors(...)`: the `error` policy's items, one per record (type `record_too_long`).
- `apply_policy(...)`: `truncate` / `drop` over measured records: a `PolicyCount` per dataset (records,
  tokens after the policy, truncated / dropped counts with their reasons), the rule of the trainers:
  over the limit, `drop` leaves the record out, `truncate` cuts it to the limit, and an SFT record cut
  with no trained token left is dropped too ("truncated with no trained token left").
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from felix_train.errors import ErrorItem

REASON_TRUNCATED = "longer than max_length: truncated"
REASON_DROPPED = "longer than max_length: dropped"
REASON_NOTHING_TRAINED = "longer than max_length: truncated, no trained token left, dropped"
REASON_REFUSED = "longer than max_length: refused (length_policy error)"

_SPLITTER_MODULE = "_felix_gliner2_word_splitter"


def gliner2_word_splitter():
    """gliner2's default word splitter (what `model.processor.word_splitter` is), without importing torch.

    `gliner2/processing/word_splitter.py` imports only the standard library; it is loaded from its file
    under a private module name, so `gliner2/__init__.py` (torch, transformers) never runs. Where the
    file is not found (another gliner2 layout) the package is imported after all.
    """
    module = sys.modules.get(_SPLITTER_MODULE)
    if module is None:
        spec = importlib.util.find_spec("gliner2")
        path = Path(spec.submodule_search_locations[0]) / "processing" / "word_splitter.py" if spec else None
        if path is None or not path.is_file():
            from gliner2.processing.word_splitter import resolve_word_splitter

            return resolve_word_splitter(None)
        file_spec = importlib.util.spec_from_file_location(_SPLITTER_MODULE, path)
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[_SPLITTER_MODULE] = module
        file_spec.loader.exec_module(module)
    return module.resolve_word_splitter(None)


def word_count(text: str, splitter) -> int:
    """Words of `text` as gliner2's collator counts (and truncates) them."""
    return sum(1 for _ in splitter(text, lower=False))


@dataclass
class Measured:
    """One record as the trainer sees it: where it comes from and how long it is."""

    dataset: str
    line: int
    length: int  # words (GLiNER2) or tokens (LLMs)
    trained_within: bool = True  # SFT: a trained token (label != -100) lies within the first max_length tokens


@dataclass
class PolicyCount:
    """What the length policy left of one dataset's records in one split."""

    records: int = 0  # kept, after the policy
    tokens: int = 0  # their lengths after truncation (words for GLiNER2)
    truncated: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add_reason(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def to_json(self) -> dict:
        return {"records": self.records, "tokens": self.tokens, "truncated": self.truncated, "dropped": self.dropped,
                "reasons": dict(self.reasons)}


def too_long_errors(measured: list[Measured], max_length: int, *, unit: str, paths: dict[str, str]) -> list[ErrorItem]:
    """One `record_too_long` item per record over `max_length`: dataset, file, line, length and the limit."""
    return [ErrorItem(("datasets", m.dataset, m.line),
                      f"{m.dataset} ({paths.get(m.dataset, '?')}) line {m.line}: {m.length} {unit} > "
                      f"engine.max_length {max_length}; expected at most {max_length} {unit} (raise "
                      "`engine.max_length`, shorten the record, or set `engine.length_policy: truncate` or `drop`)",
                      "record_too_long")
            for m in measured if m.length > max_length]


def apply_policy(measured: list[Measured], *, policy: str, max_length: int | None,
                 counts: dict[str, PolicyCount] | None = None) -> tuple[dict[str, PolicyCount], list[Measured]]:
    """(`PolicyCount` per dataset, the records kept) under `truncate` or `drop` (`error` is checked before).

    The kept records carry their length after truncation.
    """
    counts = counts if counts is not None else {}
    kept: list[Measured] = []
    for m in measured:
        c = counts.setdefault(m.dataset, PolicyCount())
        length = m.length
        if max_length and length > max_length:
            if policy == "drop":
                c.dropped += 1
                c.add_reason(REASON_DROPPED)
                continue
            c.truncated += 1
            if not m.trained_within:
                c.dropped += 1
                c.add_reason(REASON_NOTHING_TRAINED)
                continue
            c.add_reason(REASON_TRUNCATED)
            length = max_length
        c.records += 1
        c.tokens += length
        kept.append(Measured(m.dataset, m.line, length, m.trained_within))
    return counts, kept
