"""The arithmetic word-problem generator: deterministic, exact, held-out split disjoint from train, valid records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from felix_train.data.formats import DatasetFormat, validate_file
from felix_train.data.generators.arithmetic import (
    LEVELS,
    SYSTEM_PROMPT,
    Level,
    TEMPLATES,
    Split,
    generate,
    main,
    split_of,
    to_jsonl,
)

REPO = Path(__file__).resolve().parents[2]

# the answer of each template from its numbers (in the order the question states them), written independently
EXPECTED = {
    "add_buy": lambda a, b: a + b, "add_baskets": lambda a, b: a + b, "add_gift": lambda a, b: a + b,
    "sub_give": lambda a, b: a - b, "sub_sold": lambda a, b: a - b, "sub_compare": lambda a, b: a - b,
    "mul_box": lambda a, b: a * b, "mul_packs": lambda a, b: a * b, "mul_rows": lambda a, b: a * b,
    "div_share": lambda a, b: a / b, "div_bags": lambda a, b: a / b, "div_rows": lambda a, b: a / b,
    "add_sub": lambda a, b, c: a + b - c, "mul_add": lambda a, b, c: a * b + c, "mul_sub": lambda a, b, c: a * b - c,
    "add_mul": lambda a, b, c: (a + b) * c, "sub_mul": lambda a, b, c: a - b * c, "div_add": lambda a, b, c: a / b + c,
}


def test_every_template_has_an_independent_check():
    assert {t.name for t in TEMPLATES} == set(EXPECTED)
    assert {t.steps for t in TEMPLATES} == {1, 2}


def test_same_seed_same_bytes(tmp_path):
    for split in Split:
        assert to_jsonl(generate(300, seed=7, split=split)) == to_jsonl(generate(300, seed=7, split=split))
    assert to_jsonl(generate(300, seed=7)) != to_jsonl(generate(300, seed=8))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["--n", "50", "--seed", "3", "--split", "test", "--out", str(a)]) == 0
    assert main(["--n", "50", "--seed", "3", "--split", "test", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes() == to_jsonl(generate(50, seed=3, split="test")).encode()


@pytest.mark.parametrize("difficulty", sorted(LEVELS))
def test_splits_share_no_problem(difficulty):
    train = generate(800, seed=0, split="train", difficulty=difficulty)
    # another seed for the test split: the split is a property of the problem, not of the seed
    test = generate(400, seed=1, split="test", difficulty=difficulty)
    train_keys, test_keys = {p.key for p in train}, {p.key for p in test}
    assert len(train_keys) == len(train) and len(test_keys) == len(test), "problems repeat within a split"
    assert not train_keys & test_keys
    assert all(split_of(*p.key) is Split.TRAIN for p in train)
    assert all(split_of(*p.key) is Split.TEST for p in test)
    assert len({p.question for p in train} & {p.question for p in test}) == 0


@pytest.mark.parametrize("difficulty", sorted(LEVELS))
def test_every_answer_is_correct(difficulty):
    level = LEVELS[difficulty]
    problems = generate(500, seed=2, split="train", difficulty=difficulty)
    for p in problems:
        stated = tuple(int(x) for x in re.findall(r"\d+", p.question))
        assert stated == p.numbers, p.question
        expected = EXPECTED[p.template](*p.numbers)
        assert expected == int(expected) and expected >= 2, p.question
        assert p.answer == int(expected), p.question
        assert max(p.numbers) <= max(level.max_sum, level.max_factor) ** 2 + level.max_sum
    two_step = sum(p.template in {t.name for t in TEMPLATES if t.steps == 2} for p in problems) / len(problems)
    assert abs(two_step - level.two_step_share) < 0.1


def test_difficulty_one_keeps_numbers_small():
    for p in generate(500, seed=0, difficulty=1):
        assert max(p.numbers) <= 100 and p.answer <= 200, p.question


def test_records_validate_as_prompt_format(tmp_path):
    out = tmp_path / "arith.jsonl"
    assert main(["--n", "200", "--seed", "0", "--split", "train", "--difficulty", "2", "--out", str(out)]) == 0
    report = validate_file(out, expected={DatasetFormat.PROMPT})
    assert report.ok, report.errors
    assert (report.format, report.num_records, report.columns) == (DatasetFormat.PROMPT, 200, ["answer", "prompt"])
    first = json.loads(out.read_text().splitlines()[0])
    assert first["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert first["prompt"][1]["role"] == "user" and first["answer"].isdigit()
    assert "The answer is <number>." in SYSTEM_PROMPT


def test_answers_score_with_numeric_match():
    from felix_train.rewards import numeric_match

    for p in generate(50, seed=0):
        assert numeric_match(f"Let me work it out. The answer is {p.answer}.", p.to_record()["answer"]) == 1.0


def test_bad_arguments_say_what_to_fix(capsys, monkeypatch):
    with pytest.raises(ValueError, match="`difficulty` must be one of"):
        generate(5, difficulty=9)
    with pytest.raises(ValueError, match="`split` must be one of"):
        generate(5, split="validation")
    # a level with a few dozen problems in all: asking for more than its test split holds is an error, not a hang
    monkeypatch.setitem(LEVELS, 1, Level(max_sum=4, max_factor=2, two_step_share=0.0))
    with pytest.raises(ValueError, match="distinct `test` problems found at difficulty 1, 100 asked; ask for fewer"):
        generate(100, split="test")
    with pytest.raises(SystemExit):
        main(["--n", "0"])
    assert "`n` must be at least 1" in capsys.readouterr().err


def test_cli_module_runs_without_torch():
    code = ("import runpy, sys; sys.argv = ['x', '--n', '3']; "
            "runpy.run_module('felix_train.data.generators.arithmetic', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    light = "import sys, felix_train.data.generators.arithmetic; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", light], check=True, cwd=REPO)
