"""`felix_train.budgets` and the spec's budget fields: parsing, 422 items naming the field, the stop decision."""

from __future__ import annotations

import sys

import pytest

from felix_train.budgets import Budget, BudgetCheck, BudgetHit, parse_duration, read_budget_state, write_budget_state
from felix_train.errors import SpecError
from felix_train.spec import validate_spec


def spec(**engine) -> dict:
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}], "engine": engine}


@pytest.mark.parametrize("given, seconds", [(30, 30.0), (0.5, 0.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0),
                                            ("2h", 7200.0), ("1.5h", 5400.0), (" 1d ", 86400.0), ("2H", 7200.0)])
def test_max_time_takes_seconds_or_a_duration_and_resolves_to_seconds(given, seconds):
    assert parse_duration(given) == seconds
    resolved = validate_spec(spec(max_time=given), check_datasets=False)
    assert resolved.engine.max_time == seconds and resolved.to_json()["engine"]["max_time"] == seconds
    assert resolved.hyperparameters()["max_time"] == seconds


@pytest.mark.parametrize("given, words", [(0, "above zero"), (-3, "above zero"), ("0s", "above zero"),
                                          ("-5m", "above zero"), ("abc", "(units s, m, h, d); got 'abc'"),
                                          ("2 hours", "got '2 hours'"), (True, "got True"), ([1], "got [1]"),
                                          (float("nan"), "above zero")])
def test_a_bad_max_time_is_a_422_item_naming_the_field(given, words):
    with pytest.raises(SpecError) as err:
        validate_spec(spec(max_time=given), check_datasets=False)
    (item,) = err.value.errors
    assert item.loc == ("engine", "max_time") and "`max_time` must be" in item.msg and words in item.msg


@pytest.mark.parametrize("given", [0, -1, "lots", 1.5])
def test_a_bad_max_tokens_is_a_422_item_naming_the_field(given):
    with pytest.raises(SpecError) as err:
        validate_spec(spec(max_tokens=given, max_time=-1), check_datasets=False)
    locs = {item.loc: item.msg for item in err.value.errors}
    assert set(locs) == {("engine", "max_tokens"), ("engine", "max_time")}  # every problem at once
    assert repr(given) in locs[("engine", "max_tokens")]


def test_validation_of_budgets_never_imports_torch():
    validate_spec(spec(max_time="2h", max_tokens=10), check_datasets=False)
    assert "felix_train.budgets" in sys.modules
    import subprocess

    code = "import sys; from felix_train.spec import validate_spec; import felix_train.budgets; " \
           "assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_budget_check_time_first_then_tokens_and_none_without_budgets():
    check = BudgetCheck(10.0, 100)
    assert check.reached(time_s=9.9, tokens=99) is None
    assert check.reached(time_s=10.0, tokens=100) == BudgetHit(Budget.MAX_TIME, 10.0, 10.0)
    assert check.reached(time_s=1, tokens=100) == BudgetHit(Budget.MAX_TOKENS, 100, 100)
    assert BudgetHit(Budget.MAX_TOKENS, 100, 104.0).event_data() == {"budget": "max_tokens", "limit": 100, "used": 104}
    idle = BudgetCheck(all_max=lambda v: pytest.fail("no collective without a budget"))
    assert not idle.active and idle.check(time_s=1e9, tokens=1e9) is None
    assert check.describe(unit="samples", time_s=3, tokens=5) == ("budget: max_time 10 s (3.0 s used), max_tokens 100 "
                                                                  "samples (5 used); the job stops at the first step past one")


def test_ranks_agree_on_a_budget_another_rank_reached():
    other_rank_says = {"code": 0}
    check = BudgetCheck(10.0, 100, all_max=lambda v: max(v, other_rank_says["code"]))
    assert check.check(time_s=1, tokens=1) is None
    other_rank_says["code"] = 1  # another rank's clock passed max_time
    assert check.check(time_s=9.5, tokens=1) == BudgetHit(Budget.MAX_TIME, 10.0, 9.5)
    other_rank_says["code"] = 2
    assert check.check(time_s=11, tokens=1).budget is Budget.MAX_TOKENS  # every rank takes the same (max) code


def test_budget_state_round_trips_and_reads_zeros_from_an_older_checkpoint(tmp_path):
    assert read_budget_state(tmp_path) == {"train_time_s": 0.0, "trained_tokens": 0}
    assert read_budget_state(None) == {"train_time_s": 0.0, "trained_tokens": 0}
    write_budget_state(tmp_path, train_time_s=12.34567, trained_tokens=99)
    assert read_budget_state(tmp_path) == {"train_time_s": 12.346, "trained_tokens": 99}
