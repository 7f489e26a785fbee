"""`math_match`: math-verify's own examples (README and tests/test_all.py), timeouts, threads, and spec validation."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from felix_train.rewards import REWARDS, MathMatchParams, build_reward_funcs, math_match, validate_rewards

pytest.importorskip("math_verify")

REPO = Path(__file__).resolve().parents[2]


# (gold, completion, expected): math-verify's README and tests/test_all.py examples, plus the forms felix prompts ask for
MATCHES = [
    # README: order matters, gold first
    (r"The answer is \boxed{${1,3} \cup {2,4}$} What if I add some bad in the end", r"${1,2,3,4}$", 1.0),
    (r"${1,2,3,4}$", r"${1,3} \cup {2,4}$", 1.0),
    # fractions and decimals
    ("0.5", r"\boxed{\frac{1}{2}}", 1.0),
    (r"\frac{1}{2}", "The answer is 0.5", 1.0),
    ("1/2", "The answer is 1/2.", 1.0),
    ("10/9", r"\frac{10}{9}", 1.0),
    ("-10/9", r"-\frac{10}{9}", 1.0),
    (r"$1/3$", r"$\frac13 $", 1.0),
    (r"$1/3$", r"$\dfrac{1}{3} $", 1.0),
    (r"$1/3$", r"$k = \frac{1}{3}$", 1.0),
    (r"\frac{1}{3}", r"My answer is \boxed{\frac{1}{2}}", 0.0),
    # roots and symbolic equality
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt{3}}{2}}", 1.0),
    (r"$\frac{\sqrt{3}}{2}$", r"$\sin(\pi/3)$", 1.0),
    (r"$\sqrt{3}$", r"$\sqrt3 $", 1.0),
    ("$2-2p$", r"Thus $x-p=\boxed{2-2p}$.", 1.0),
    # intervals
    ("$[0,1)$", "$[0,1)$", 1.0),
    ("$[0,9)$", "$[0,1)$", 0.0),
    ("$(0,9)$", "$[0,9)$", 0.0),
    # numbers as models write them
    ("7425000", "7,425,000", 1.0),
    ("1000", "1000.0", 1.0),
    ("1000.99", "$1,000.99", 1.0),
    ("-5", "-5", 1.0),
    ("$9$", r"Answer \[ 9 \]", 1.0),
    ("$9$", r"Answer \( 9 \)", 1.0),
    ("$10$", r"Answer \( (9+1) \)", 1.0),
    (r"$28\%$", "28 percent", 1.0),
    ("$0.28$", "28", 0.0),
    # the felix arithmetic prompts: "Finish with: The answer is <number>."
    ("8", "Tom has 3 + 5 = 8 apples. The answer is 8.", 1.0),
    ("8", "3 + 5 = 7. Wait, the answer is 8.", 1.0),
    ("8", "The answer is 9.", 0.0),
    # a GSM8K rationale as gold
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72",
     "She sold 24 in May, so 48 + 24 = 72. The answer is 72.", 1.0),
]


@pytest.mark.parametrize("gold,completion,expected", MATCHES)
def test_math_verify_examples(gold, completion, expected):
    assert math_match(completion, gold) == expected


def test_chat_completion_and_plain_numbers_as_gold():
    assert math_match([{"role": "assistant", "content": r"\boxed{\frac{1}{2}}"}], 0.5) == 1.0
    assert math_match("The answer is 12", 12) == 1.0


def test_no_parsable_answer_scores_zero():
    assert math_match("I don't know", "8") == 0.0
    assert math_match("", r"\frac{1}{2}") == 0.0


def test_gold_without_maths_is_not_judged():
    assert math_match("5", None) is None
    assert math_match("5", "no gold here") is None
    assert math_match("5", True) is None


def test_a_slow_comparison_times_out_to_zero(monkeypatch):
    """math-verify's own timeout test: a comparison that hangs scores 0 after `timeout_seconds`."""
    import math_verify.grader

    def hang(*args, **kwargs):
        time.sleep(5)
        return True

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", hang)
    start = time.monotonic()
    # (gold and answer strings differ, so only the hanging sympy comparison could match them)
    assert math_match(r"\boxed{\frac{1}{2}}", "0.5", timeout_seconds=1) == 0.0
    assert time.monotonic() - start < 4


def test_works_outside_the_main_thread():
    """signal.alarm is main-thread only: elsewhere the reward runs without math-verify's timeouts, not crashing."""
    out: dict = {}

    def worker():
        try:
            out["scores"] = [math_match(r"\boxed{\frac{1}{2}}", "0.5"), math_match("The answer is 3", r"\frac{1}{2}")]
        except BaseException as err:  # noqa: BLE001 - the test reports it
            out["error"] = err

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["scores"] == [1.0, 0.0]


def test_trl_callable():
    [func], [weight] = build_reward_funcs([{"type": "math_match", "weight": 0.5, "timeout_seconds": 2}])
    assert (func.__name__, weight) == ("math_match", 0.5)
    completions = [[{"role": "assistant", "content": r"So it is \boxed{\frac{1}{2}}."}],
                   [{"role": "assistant", "content": "The answer is 3."}],
                   [{"role": "assistant", "content": "no idea"}]]
    scores = func(prompts=["p"] * 3, completions=completions, answer=["0.5", "0.5", "n/a"], completion_ids=[[1]] * 3)
    assert scores == [1.0, 0.0, None]


def test_registered_with_params_and_answer_column():
    defn = REWARDS["math_match"]
    assert defn.params_model is MathMatchParams and defn.fn is math_match
    assert defn.columns(MathMatchParams()) == ("answer",)
    assert validate_rewards("math_match", {"prompt", "answer"}) == []
    assert validate_rewards([{"type": "math_match", "column": "solution"}], {"prompt", "solution"}) == []
    [(loc, msg, typ)] = validate_rewards("math_match", {"prompt", "solution"})
    assert (loc, typ) == ((), "reward_column_missing") and "column `answer`" in msg
    [(loc, _, typ)] = validate_rewards([{"type": "math_match", "timeout_seconds": 0}], {"answer"})
    assert (loc, typ) == ((0, "timeout_seconds"), "greater_than_equal")
    [(loc, msg, typ)] = validate_rewards([{"type": "math_match", "tolerance": 0.1}], {"answer"})
    assert typ == "extra_forbidden" and "timeout_seconds" in msg


def test_validation_does_not_import_math_verify():
    code = ("import sys; from felix_train.rewards import validate_rewards, build_reward_funcs; "
            "assert validate_rewards('math_match', {'answer'}) == []; build_reward_funcs('math_match'); "
            "assert 'math_verify' not in sys.modules and 'sympy' not in sys.modules, 'math_verify imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- spec validation


def _grpo_spec(dataset: str) -> dict:
    return {"base_model": "felix/tiny-llm", "datasets": [{"name": dataset}], "training_algorithm": "grpo",
            "engine": {"batch_size": 8}, "rl_config": {"reward_type": "math_match", "num_generations": 4}}


@pytest.fixture
def prompt_datasets(felix_home, tmp_path):
    import json

    from felix_train.data.registry import DatasetRegistry

    reg = DatasetRegistry(felix_home)
    with_answer = tmp_path / "math.jsonl"
    with_answer.write_text(json.dumps({"prompt": "What is 1/2 + 1/4?", "answer": r"\frac{3}{4}"}) + "\n")
    without = tmp_path / "nosol.jsonl"
    without.write_text(json.dumps({"prompt": "What is 1/2 + 1/4?", "solution": "3/4"}) + "\n")
    reg.add("math", with_answer)
    reg.add("nosol", without)
    return reg


def test_spec_accepts_math_match_with_an_answer_column(prompt_datasets, felix_home):
    from felix_train.spec import validate_spec

    spec = validate_spec(_grpo_spec("math"), home=felix_home)
    assert spec.rl().num_generations == 4


def test_spec_refuses_math_match_without_the_answer_column(prompt_datasets, felix_home):
    from felix_train.errors import SpecError
    from felix_train.spec import validate_spec

    with pytest.raises(SpecError) as info:
        validate_spec(_grpo_spec("nosol"), home=felix_home)
    found = [(tuple(e.loc), e.type) for e in info.value.errors]
    assert (("rl_config", "reward_type"), "reward_column_missing") in found, found
