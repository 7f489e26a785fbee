"""The train / held-out files of the SFT, DPO and GRPO quality runs: seeded, disjoint, written under the work folder.

- SFT: `dolly/dolly_open_qa_1000.jsonl` chats, a seeded shuffle cut into held-out and train.
- DPO: `hh_rlhf/*.jsonl` preference pairs, likewise (the shared sample shares no prompt between its pairs' files).
- GRPO arithmetic: seeded word problems from `felix_train.data.generators.arithmetic` (its train and test splits
  never share a problem) where the package has it, else `simple_arithmetic` below (same record shape, same split
  rule: a fixed hash of the problem).
- GRPO GSM8K: `gsm8k/*.jsonl` questions as chat prompts with the answer-format instruction the arithmetic problems
  use, gold answers without thousands separators.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from bench.quality.split import read_records, write_records

SYSTEM_PROMPT = "Solve the math problem step by step, briefly. Finish with: The answer is <number>."
SEED = 0


def _shuffled(records: list[dict], seed: int = SEED) -> list[dict]:
    records = list(records)
    random.Random(seed).shuffle(records)
    return records


def _cut(records: list[dict], train: int, test: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): the first `test` records of a seeded shuffle are held out, the next `train` train."""
    records = _shuffled(records)
    if train + test > len(records):
        raise ValueError(f"{train} train + {test} held-out records asked, {len(records)} available")
    return records[test:test + train], records[:test]


def _files(folder: Path, name: str, train: list[dict], test: list[dict]) -> dict[str, Path]:
    return {"train": write_records(folder / f"{name}-train.jsonl", train),
            "test": write_records(folder / f"{name}-test.jsonl", test)}


def sft_files(data_dir: Path, folder: Path, train: int, test: int) -> dict[str, Path]:
    return _files(folder, "dolly", *_cut(read_records(data_dir / "dolly" / "dolly_open_qa_1000.jsonl"), train, test))


def dpo_files(data_dir: Path, folder: Path, train: int, test: int) -> dict[str, Path]:
    pairs = [r for f in sorted((data_dir / "hh_rlhf").glob("*.jsonl")) for r in read_records(f)]
    return _files(folder, "hh-rlhf", *_cut(pairs, train, test))


def gsm8k_files(data_dir: Path, folder: Path, train: int, test: int) -> dict[str, Path]:
    rows = [{"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": r["prompt"]}],
             "answer": str(r["answer"]).replace(",", "")}
            for f in sorted((data_dir / "gsm8k").glob("*.jsonl")) for r in read_records(f)]
    return _files(folder, "gsm8k", *_cut(rows, train, test))


def arithmetic_files(folder: Path, train: int, test: int) -> tuple[dict[str, Path], str]:
    """The arithmetic problems, and which generator made them."""
    try:
        from felix_train.data.generators.arithmetic import generate
    except ImportError:
        return _files(folder, "arithmetic", simple_arithmetic(train, "train"), simple_arithmetic(test, "test")), \
            "bench.quality.rl_data.simple_arithmetic"
    return _files(folder, "arithmetic", [p.to_record() for p in generate(train, seed=SEED, split="train")],
                  [p.to_record() for p in generate(test, seed=SEED, split="test")]), \
        "felix_train.data.generators.arithmetic"


_TEMPLATES = (
    ("add", "{n} has {a} {items} and gets {b} more. How many {items} does {n} have now?", lambda a, b: a + b),
    ("sub", "{n} had {a} {items} and gave away {b}. How many {items} are left?", lambda a, b: a - b),
    ("mul", "There are {a} boxes with {b} {items} in each. How many {items} are there in all?", lambda a, b: a * b),
)
_NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies")


def simple_arithmetic(n: int, split: str, seed: int = SEED) -> list[dict]:
    """`n` distinct one-step problems of `split` (30 % of all problems, by a fixed hash, are `test`)."""
    rng = random.Random(f"{seed}:{split}")
    seen: set[tuple] = set()
    out: list[dict] = []
    for _ in range(200_000):
        if len(out) == n:
            return out
        name, text, solve = rng.choice(_TEMPLATES)
        a, b = rng.randint(2, 20), rng.randint(2, 10)
        if name == "sub" and b >= a:
            continue
        key = (name, a, b)
        in_test = int(hashlib.blake2b(repr(key).encode(), digest_size=4).hexdigest(), 16) % 100 < 30
        if key in seen or in_test != (split == "test"):
            continue
        seen.add(key)
        question = text.format(n=rng.choice(_NAMES), items=rng.choice(_ITEMS), a=a, b=b)
        out.append({"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
                    "answer": str(solve(a, b))})
    raise ValueError(f"only {len(out)} distinct `{split}` problems found, {n} asked; ask for fewer")
