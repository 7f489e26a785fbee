#!/usr/bin/env python
"""Generate felix_train/data/builtin/felix-ner-quickstart.jsonl, the quickstart NER dataset.

The data is synthetic and written for this project (not derived from any public
dataset): a seeded template grammar over hand-written lexicons. Sentences span
several registers (news, chat, business, sport, travel, science), lengths and
positions, and some contain no entities at all.

Labels (every record lists all five; an empty list means "none of this type"):

* person        a person's name, without titles (``Dr. Amara Okafor`` -> ``Amara Okafor``);
                full name, first name or surname alone.
* organization  a named company, team, university, agency, newspaper or NGO.
* location      a named city, country, region, island, mountain range, river or landmark.
* date          an absolute calendar expression: ``14 March 2023``, ``March 14``,
                ``June 2022``, ``2019``, ``Friday``, ``2024-05-17``, ``3rd of May``
                (no leading ``on``/``the``; relative words such as ``tomorrow`` are not dates).
* product       a named commercial product: devices, software, vehicles, games, drinks, ...

Every mention is an exact substring of ``input`` and occurs there exactly once
(token-wise, case-insensitively, the way gliner2 locates it); mentions are listed
in order of occurrence.

Usage:
    python datagen/make_quickstart_ner.py [--seed 20240611] [--n 900] [--out PATH] [--stats]

Reruns with the same seed reproduce the file byte for byte. The grammar lives beside this file:
`ner_lexicons.py` (the word lists), `ner_samplers.py` (one entity sampler per label), `ner_templates.py`
(the sentences); this module fills templates, checks each mention and writes the records.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a file (`python datagen/make_quickstart_ner.py`): the repository root first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.ner_samplers import GENERATORS  # noqa: E402
from datagen.ner_templates import N_TEMPLATES, NO_ENTITY_TEMPLATES, TEMPLATES  # noqa: E402

LABELS = ("person", "organization", "location", "date", "product")
DEFAULT_SEED = 20240611
DEFAULT_N = 900
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "felix_train" / "data" / "builtin" / "felix-ner-quickstart.jsonl"

SLOT_RE = re.compile(r"\{([PLODRN])(\d?)(?::(\w+))?\}|\[([^\]]+)\]")

# gliner2's WhitespaceTokenSplitter (gliner2/processing/word_splitter.py), used to check
# that each mention occurs exactly once, token-aligned, case-insensitively.
TOKEN_RE = re.compile(
    r"""(?:https?://[^\s]+|www\.[^\s]+)
    |[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}
    |@[a-z0-9_]+
    |\w+(?:[-_]\w+)*
    |\S""",
    re.VERBOSE | re.IGNORECASE,
)


def tokens(text: str) -> list[str]:
    return [m.group().lower() for m in TOKEN_RE.finditer(text)]


def count_sublist(sub: list[str], seq: list[str]) -> int:
    n = len(sub)
    return sum(1 for i in range(len(seq) - n + 1) if seq[i:i + n] == sub)


def render(template: str, rng: random.Random) -> tuple[str, list[tuple[str, int, str]]] | None:
    """Fill a template; return the text and its (label, start, mention) triples, or None."""
    out: list[str] = []
    mentions: list[tuple[str, int, str]] = []
    used: dict[str, str] = {}
    pos = 0
    cursor = 0
    for m in SLOT_RE.finditer(template):
        out.append(template[pos:m.start()])
        cursor += m.start() - pos
        pos = m.end()
        if m.group(4) is not None:  # [a|b|c]
            piece = rng.choice(m.group(4).split("|"))
            out.append(piece)
            cursor += len(piece)
            continue
        code, idx, kind = m.group(1), m.group(2), m.group(3) or ""
        if code == "N":
            if kind == "score":
                piece = str(rng.randint(0, 5))
            else:
                piece = str(rng.choice([2, 3, 4, 5, 6, 7, 8, 12, 15, 20, 35, 40, 60, 75, 120, 300]))
            out.append(piece)
            cursor += len(piece)
            continue
        label, gen = GENERATORS[code]
        for _ in range(20):
            piece = gen(rng, kind)
            if piece not in used.values():
                break
        else:
            return None
        used[code + idx] = piece
        # Sentence-initial "the X" is capitalised, and stays part of the mention only if it names the entity.
        text_so_far = "".join(out)
        at_start = not text_so_far.strip() or text_so_far.rstrip().endswith((".", "!", "?"))
        if piece.startswith("the "):
            # The article is not part of the mention: "the Netherlands" -> "Netherlands".
            article = "The " if at_start else "the "
            out.append(article)
            cursor += len(article)
            piece = piece[4:]
        out.append(piece)
        mentions.append((label, cursor, piece))
        cursor += len(piece)
    out.append(template[pos:])
    return "".join(out), mentions


def valid(text: str, mentions: list[tuple[str, int, str]]) -> bool:
    toks = tokens(text)
    spans = []
    for label, start, mention in mentions:
        if text[start:start + len(mention)] != mention:
            return False
        mtoks = tokens(mention)
        if not mtoks or len(mtoks) > 7:
            return False
        if count_sublist(mtoks, toks) != 1:
            return False
        # token-aligned: the mention must not start or end inside a word
        if start > 0 and (text[start - 1].isalnum() or text[start].isalnum() and text[start - 1] in "-_"):
            return False
        end = start + len(mention)
        if end < len(text) and text[end].isalnum():
            return False
        spans.append((start, end))
    spans.sort()
    return all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def make_record(text: str, mentions: list[tuple[str, int, str]]) -> dict:
    entities: dict[str, list[str]] = {label: [] for label in LABELS}
    for label, _start, mention in sorted(mentions, key=lambda t: t[1]):
        entities[label].append(mention)
    return {"input": text, "output": {"entities": entities}}


def generate(seed: int = DEFAULT_SEED, n: int = DEFAULT_N, neg_rate: float = 0.2,
             pair_rate: float = 0.12) -> list[dict]:
    rng = random.Random(seed)
    registers = list(TEMPLATES)
    # Walk every template at least once before sampling freely, so all frames appear.
    order = [t for r in registers for t in TEMPLATES[r]]
    rng.shuffle(order)
    neg_order = list(NO_ENTITY_TEMPLATES)
    rng.shuffle(neg_order)

    records: list[dict] = []
    seen_texts: set[str] = set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > n * 50:
            raise RuntimeError("could not generate enough distinct records")
        if neg_order and rng.random() < 0.5:
            parts = [neg_order.pop()]
        elif order:
            parts = [order.pop()]
        elif rng.random() < neg_rate:
            parts = [rng.choice(NO_ENTITY_TEMPLATES)]
        else:
            parts = [rng.choice(TEMPLATES[rng.choice(registers)])]
        # Some records are two sentences (mixing in a no-entity sentence or another frame).
        if rng.random() < pair_rate:
            if rng.random() < 0.5:
                extra = rng.choice(NO_ENTITY_TEMPLATES)
            else:
                extra = rng.choice(TEMPLATES[rng.choice(registers)])
            if extra[:1].islower() or parts[0][:1].islower():
                pass  # don't glue chat-style lower-case lines into prose
            elif rng.random() < 0.5:
                parts.append(extra)
            else:
                parts.insert(0, extra)
        template = " ".join(parts)
        result = None
        for _ in range(30):
            result = render(template, rng)
            if result is not None and valid(*result):
                break
            result = None
        if result is None:
            continue
        text, mentions = result
        if text in seen_texts:
            continue
        seen_texts.add(text)
        records.append(make_record(text, mentions))
    rng.shuffle(records)
    return records


def dumps(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def stats(records: list[dict]) -> dict:
    per_label = Counter()
    with_entities = 0
    for r in records:
        ents = r["output"]["entities"]
        total = 0
        for label in LABELS:
            per_label[label] += len(ents[label])
            total += len(ents[label])
        with_entities += bool(total)
    lengths = sorted(len(r["input"].split()) for r in records)
    return {
        "records": len(records),
        "with_entities": with_entities,
        "without_entities": len(records) - with_entities,
        "mentions": {label: per_label[label] for label in LABELS},
        "distinct_mentions": {label: len({m for r in records for m in r["output"]["entities"][label]})
                              for label in LABELS},
        "words_per_record": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "templates": N_TEMPLATES,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the quickstart NER dataset.")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="number of records")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--stats", action="store_true", help="print dataset statistics as JSON")
    args = ap.parse_args(argv)

    records = generate(args.seed, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(records).encode("utf-8")
    args.out.write_bytes(data)
    print(f"wrote {len(records)} records, {len(data)} bytes to {args.out}", file=sys.stderr)
    if args.stats:
        print(json.dumps(stats(records), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
