"""gliner2-format NER records ↔ BIO word tags, for the token-classification baseline.

A record's `input` is its words joined by single spaces and each mention is a run of those words (the
shared data's format), so tagging a record is finding each mention's words in order: per label, each
mention takes its next occurrence after the previous mention of that label, on words not yet tagged.
Decoding follows conlleval: `B-X` opens a span, `I-X` continues an open `X` span and opens one otherwise.
"""

from __future__ import annotations


def entities_of(record: dict) -> dict[str, list[str]]:
    return dict((record.get("output") or {}).get("entities") or {})


def label_list(records: list[dict]) -> list[str]:
    """`O` then `B-x`, `I-x` for every label the records name, sorted."""
    labels = sorted({label for r in records for label in entities_of(r)})
    return ["O"] + [f"{p}-{label}" for label in labels for p in ("B", "I")]


def _find(words: list[str], target: list[str], start: int, taken: list[bool]) -> int | None:
    for i in range(start, len(words) - len(target) + 1):
        if words[i:i + len(target)] == target and not any(taken[i:i + len(target)]):
            return i
    return None


def bio_tags(record: dict) -> tuple[list[str], list[str], int]:
    """(words, one BIO tag per word, mentions that could not be placed)."""
    words = record["input"].split()
    tags = ["O"] * len(words)
    taken = [False] * len(words)
    missed = 0
    for label, mentions in sorted(entities_of(record).items()):
        start = 0
        for mention in mentions or []:
            target = str(mention).split()
            at = _find(words, target, start, taken) if target else None
            if at is None:
                at = _find(words, target, 0, taken) if target else None
            if at is None:
                missed += 1
                continue
            tags[at] = f"B-{label}"
            for j in range(at, at + len(target)):
                taken[j] = True
                if j > at:
                    tags[j] = f"I-{label}"
            start = at + len(target)
    return words, tags, missed


def decode(words: list[str], tags: list[str]) -> dict[str, list[str]]:
    """`{label: [mention, ...]}` from one BIO tag per word (conlleval's reading of a stray `I-`)."""
    out: dict[str, list[str]] = {}
    label, span = None, []

    def close() -> None:
        if label is not None and span:
            out.setdefault(label, []).append(" ".join(span))

    for word, tag in zip(words, tags):
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and kind == label:
            span.append(word)
            continue
        close()
        label, span = (kind, [word]) if prefix in ("B", "I") else (None, [])
    close()
    return out
