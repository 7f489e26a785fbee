"""Arithmetic word problems for GRPO: seeded, exact, with a held-out split that shares no problem with training.

Each record is a prompt-only GRPO record like `felix-math-mini`: a chat `prompt` (a system instruction asking
to finish with "The answer is <number>." and the question) and the gold `answer` (an integer, as text), which
the `numeric_match` and `math_match` rewards read::

    python -m felix_train.data.generators.arithmetic --n 500 --seed 0 --split train --out arith-train.jsonl
    python -m felix_train.data.generators.arithmetic --n 200 --seed 0 --split test --out arith-test.jsonl

- Problems come from templates (`TEMPLATES`): one-step add, subtract, multiply, divide, and two-step mixes; every
  result is a whole number of at least 2 (divisions are exact, subtractions stay positive).
- `difficulty` (1-3, `LEVELS`) sets the number ranges and the share of two-step problems; 1 keeps the numbers
  small (sums up to 20, factors up to 10) so a 135M instruct model gets some right.
- A problem is its template and its numbers. Which split it belongs to is a fixed hash of that pair, the same
  for every seed and difficulty, so no train set ever shares a problem with any test set; about `TEST_SHARE`
  of all problems are held out. Within a split the problems are distinct.
- The same arguments give the same bytes (the seed, split and difficulty seed the draw; names and items vary
  with it, not the problem's identity).

Standard library only: no torch, no datasets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

SYSTEM_PROMPT = "Solve the math problem step by step, briefly. Finish with: The answer is <number>."

# share of all (template, numbers) problems held out for the test split, in percent of the hash buckets
TEST_SHARE = 30

NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Zoe", "Ravi", "Emma", "Leo", "Anna")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "balloons")


class Split(str, Enum):
    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class Level:
    """Number ranges of one difficulty level."""

    max_sum: int  # largest operand of an addition or subtraction
    max_factor: int  # largest factor of a multiplication (and divisor / quotient of a division)
    two_step_share: float  # share of two-step problems


LEVELS: dict[int, Level] = {
    1: Level(max_sum=20, max_factor=10, two_step_share=0.2),
    2: Level(max_sum=50, max_factor=12, two_step_share=0.5),
    3: Level(max_sum=100, max_factor=15, two_step_share=0.8),
}


@dataclass(frozen=True)
class Template:
    """A problem shape: `text` with `{name}`, `{name2}`, `{items}` and the numbers `{a}`, `{b}`, `{c}` in order
    of appearance; `draw` picks the numbers for a level; `solve` computes the answer from them."""

    name: str
    steps: int
    text: str
    draw: Callable[[random.Random, Level], tuple[int, ...]]
    solve: Callable[..., int]


def _sum_pair(rng: random.Random, lv: Level) -> tuple[int, int]:
    return rng.randint(2, lv.max_sum), rng.randint(2, lv.max_sum)


def _difference(rng: random.Random, lv: Level) -> tuple[int, int]:
    a = rng.randint(4, lv.max_sum)
    return a, rng.randint(2, a - 2)


def _factors(rng: random.Random, lv: Level) -> tuple[int, int]:
    return rng.randint(2, lv.max_factor), rng.randint(2, lv.max_factor)


def _dividend(rng: random.Random, lv: Level) -> tuple[int, int]:
    quotient, divisor = _factors(rng, lv)
    return quotient * divisor, divisor


def _add_sub(rng: random.Random, lv: Level) -> tuple[int, ...]:
    a, b = _sum_pair(rng, lv)
    return a, b, rng.randint(2, a + b - 2)


def _mul_add(rng: random.Random, lv: Level) -> tuple[int, ...]:
    return (*_factors(rng, lv), rng.randint(2, lv.max_sum))


def _mul_sub(rng: random.Random, lv: Level) -> tuple[int, ...]:
    a, b = _factors(rng, lv)
    return a, b, rng.randint(2, a * b - 2)


def _add_mul(rng: random.Random, lv: Level) -> tuple[int, ...]:
    return rng.randint(2, lv.max_sum // 2), rng.randint(2, lv.max_sum // 2), rng.randint(2, lv.max_factor)


def _sub_mul(rng: random.Random, lv: Level) -> tuple[int, ...]:
    b, c = _factors(rng, lv)
    return b * c + rng.randint(2, lv.max_sum), b, c


def _div_add(rng: random.Random, lv: Level) -> tuple[int, ...]:
    return (*_dividend(rng, lv), rng.randint(2, lv.max_sum))


TEMPLATES: tuple[Template, ...] = (
    # one step
    Template("add_buy", 1, "{name} has {a} {items} and buys {b} more. How many {items} does {name} have now?",
             _sum_pair, lambda a, b: a + b),
    Template("add_baskets", 1, "There are {a} {items} in one basket and {b} {items} in another. "
             "How many {items} are there in all?", _sum_pair, lambda a, b: a + b),
    Template("add_gift", 1, "{name} had {a} {items}. {name2} gave {name} {b} more. How many {items} does {name} "
             "have in total?", _sum_pair, lambda a, b: a + b),
    Template("sub_give", 1, "{name} had {a} {items} and gave {b} to {name2}. How many {items} does {name} have "
             "left?", _difference, lambda a, b: a - b),
    Template("sub_sold", 1, "A shelf held {a} {items}. Then {b} of them were sold. How many {items} are on the "
             "shelf now?", _difference, lambda a, b: a - b),
    Template("sub_compare", 1, "{name} has {a} {items} and {name2} has {b}. How many more {items} does {name} have "
             "than {name2}?", _difference, lambda a, b: a - b),
    Template("mul_box", 1, "A box holds {a} {items}. How many {items} are in {b} boxes?",
             _factors, lambda a, b: a * b),
    Template("mul_packs", 1, "{name} buys {a} packs of {items} with {b} {items} in each pack. How many {items} "
             "does {name} buy?", _factors, lambda a, b: a * b),
    Template("mul_rows", 1, "There are {a} rows of {items} with {b} {items} in each row. How many {items} are "
             "there?", _factors, lambda a, b: a * b),
    Template("div_share", 1, "{name} shares {a} {items} equally among {b} friends. How many {items} does each "
             "friend get?", _dividend, lambda a, b: a // b),
    Template("div_bags", 1, "{a} {items} are packed into bags of {b}. How many bags are filled?",
             _dividend, lambda a, b: a // b),
    Template("div_rows", 1, "{a} {items} are set out in {b} equal rows. How many {items} are in each row?",
             _dividend, lambda a, b: a // b),
    # two steps
    Template("add_sub", 2, "{name} has {a} {items}, buys {b} more, then gives away {c}. How many {items} does "
             "{name} have now?", _add_sub, lambda a, b, c: a + b - c),
    Template("mul_add", 2, "{name} buys {a} boxes with {b} {items} in each box and finds {c} more {items}. "
             "How many {items} does {name} have?", _mul_add, lambda a, b, c: a * b + c),
    Template("mul_sub", 2, "{name} has {a} bags with {b} {items} in each bag and gives away {c} {items}. "
             "How many {items} are left?", _mul_sub, lambda a, b, c: a * b - c),
    Template("add_mul", 2, "A class has {a} boys and {b} girls. Each child gets {c} {items}. How many {items} "
             "are given out?", _add_mul, lambda a, b, c: (a + b) * c),
    Template("sub_mul", 2, "{name} has {a} dollars and buys {b} {items} that cost {c} dollars each. How many "
             "dollars does {name} have left?", _sub_mul, lambda a, b, c: a - b * c),
    Template("div_add", 2, "{a} {items} are shared equally among {b} children. Then each child gets {c} more. "
             "How many {items} does each child have now?", _div_add, lambda a, b, c: a // b + c),
)


@dataclass(frozen=True)
class Problem:
    """One generated problem: its template, its numbers (in the order the question states them), the
    question and the answer."""

    template: str
    numbers: tuple[int, ...]
    question: str
    answer: int

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        """What makes two problems the same (names and items do not)."""
        return self.template, self.numbers

    def to_record(self) -> dict:
        """The GRPO prompt record: a chat `prompt` and the gold `answer`."""
        return {"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.question}],
                "answer": str(self.answer)}


def split_of(template: str, numbers: tuple[int, ...]) -> Split:
    """The split a problem belongs to: a fixed hash of its template and numbers, independent of any seed."""
    digest = hashlib.blake2b(f"{template}:{','.join(map(str, numbers))}".encode(), digest_size=8).digest()
    return Split.TEST if int.from_bytes(digest, "big") % 100 < TEST_SHARE else Split.TRAIN


# draws in a row without a new problem after which the split counts as exhausted
_MAX_MISSES = 20_000


def _rng(seed: int, split: Split, difficulty: int) -> random.Random:
    digest = hashlib.sha256(f"arithmetic:{seed}:{split.value}:{difficulty}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate(n: int, *, seed: int = 0, split: Split | str = Split.TRAIN, difficulty: int = 1) -> list[Problem]:
    """`n` distinct problems of `split`, drawn from `seed` at `difficulty` (see `LEVELS`).

    Raises:
        ValueError: If `n` < 1, `difficulty` or `split` is unknown, or the split holds fewer than `n` distinct
            problems at this difficulty.
    """
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}")
    if difficulty not in LEVELS:
        raise ValueError(f"`difficulty` must be one of {sorted(LEVELS)}, got {difficulty}")
    try:
        split = Split(split)
    except ValueError as err:
        raise ValueError(f"`split` must be one of {[s.value for s in Split]}, got {split!r}") from err
    level = LEVELS[difficulty]
    rng = _rng(seed, split, difficulty)
    by_steps = {steps: [t for t in TEMPLATES if t.steps == steps] for steps in (1, 2)}
    problems: list[Problem] = []
    seen: set[tuple[str, tuple[int, ...]]] = set()
    misses = 0  # draws in a row that gave no new problem of this split
    while len(problems) < n:
        if misses > _MAX_MISSES:
            raise ValueError(f"only {len(problems)} distinct `{split.value}` problems found at difficulty "
                             f"{difficulty}, {n} asked; ask for fewer or raise `difficulty`")
        template = rng.choice(by_steps[2 if rng.random() < level.two_step_share else 1])
        numbers = template.draw(rng, level)
        name, name2 = rng.sample(NAMES, 2)
        items = rng.choice(ITEMS)
        key = (template.name, numbers)
        if key in seen or split_of(*key) is not split:
            misses += 1
            continue
        misses = 0
        seen.add(key)
        fields = dict(zip("abc", numbers))
        question = template.text.format(name=name, name2=name2, items=items, **fields)
        problems.append(Problem(template.name, numbers, question, template.solve(*numbers)))
    return problems


def to_jsonl(problems: list[Problem]) -> str:
    """The problems as JSONL text, one record a line."""
    return "".join(json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m felix_train.data.generators.arithmetic",
        description="Write seeded arithmetic word problems as GRPO prompt records (`prompt`, `answer`). "
                    "The train and test splits never share a problem.")
    parser.add_argument("--n", type=int, default=500, help="number of problems (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", choices=[s.value for s in Split], default=Split.TRAIN.value,
                        help="train, or the held-out test split (default train)")
    parser.add_argument("--difficulty", type=int, choices=sorted(LEVELS), default=1,
                        help="1: sums up to 20, factors up to 10, 20%% two-step; 2: 50, 12, 50%%; "
                             "3: 100, 15, 80%% (default 1)")
    parser.add_argument("--out", default="-", help="output JSONL file, `-` for stdout (default -)")
    args = parser.parse_args(argv)
    try:
        problems = generate(args.n, seed=args.seed, split=args.split, difficulty=args.difficulty)
    except ValueError as err:
        parser.error(str(err))
    text = to_jsonl(problems)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {len(problems)} {args.split} problems (difficulty {args.difficulty}, seed {args.seed}) "
              f"to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
