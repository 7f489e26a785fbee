"""Rewards: each pure function on hand-written cases, the TRL callables, and spec validation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import felix_train.rewards as rewards_pkg
from felix_train.rewards import (
    REWARDS,
    RewardDef,
    RewardParseError,
    RewardSpec,
    build_reward_funcs,
    completion_text,
    contains,
    entity_f1,
    exact_match,
    extract_final_number,
    json_schema,
    json_valid,
    length_penalty,
    numeric_match,
    parse_entities,
    parse_reward_type,
    regex_match,
    validate_rewards,
)


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------ text


def test_completion_text_plain_and_conversational():
    assert completion_text("hi") == "hi"
    assert completion_text(conv("hi")) == "hi"
    assert completion_text({"role": "assistant", "content": "hi"}) == "hi"
    assert completion_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]) == \
        "be brief\n2+2?"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text(None) == ""


# ------------------------------------------------------------- exact_match


def test_exact_match():
    assert exact_match("  Paris\n", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert exact_match("paris", "Paris", ignore_case=True) == 1.0
    assert exact_match(" Paris", "Paris", strip=False) == 0.0
    assert exact_match("42", 42) == 1.0
    assert exact_match("x", None) is None


# ----------------------------------------------------------- numeric_match


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48/2 = 24 clips in May... so the answer is $1,080.\n#### 1080", 1080),
    ("She has 3 apples and 5 pears.\n#### 72", 72),
    ("We get \\boxed{2.50} in total, 7 steps", 2.5),
    ("\\boxed{\\frac{3}{4}}", 0.75),
    ("First 12, then 30. The answer is 18 apples, 7 left", 18),
    ("The final answer: -3.", -3),
    ("It costs 5 dollars.", 5),
    ("The side is 12 cm", 12),
    ("about 50%", 50),
    ("temperature drops to -7 degrees", -7),
    ("between 3-5", 5),
    ("Total = $1,234,567.89", 1234567.89),
    ("no digits here", None),
])
def test_extract_final_number(text, expected):
    got = extract_final_number(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_numeric_match_gsm8k():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert numeric_match("48 + 24 = 72, so the answer is 72.", gold) == 1.0
    assert numeric_match("so the answer is $1,080.\n#### 1080", "1080") == 1.0
    assert numeric_match("#### 1,080", 1080) == 1.0
    assert numeric_match("The answer is 2.50", "2.5") == 1.0
    assert numeric_match("The answer is -3", "-3") == 1.0
    assert numeric_match("The answer is 3", "-3") == 0.0
    assert numeric_match("I don't know", "5") == 0.0
    assert numeric_match("5", "no gold") is None
    assert numeric_match("The answer is 5.0000001", "5", tolerance=1e-3) == 1.0
    assert numeric_match("The answer is 5.1", "5", tolerance=1e-3) == 0.0


# ------------------------------------------------------------- regex/contains


def test_regex_match():
    assert regex_match("Answer: 42", r"\d+") == 1.0
    assert regex_match("Answer: 42", r"\d+", full=True) == 0.0
    assert regex_match(" 42\n", r"\d+", full=True) == 1.0
    assert regex_match("YES", r"yes") == 0.0
    assert regex_match("YES", r"yes", ignore_case=True) == 1.0


def test_contains():
    assert contains("The capital is PARIS.", "paris") == 1.0
    assert contains("The capital is PARIS.", "paris", ignore_case=False) == 0.0
    assert contains("nothing", "paris") == 0.0
    assert contains("x", None) is None
    assert contains("x", "") is None


# ------------------------------------------------------------------ json


def test_json_valid():
    assert json_valid('{"a": 1}') == 1.0
    assert json_valid('Here you go:\n```json\n{"a": [1, 2]}\n```\nDone.') == 1.0
    assert json_valid('```\n[1, 2]\n```') == 1.0
    assert json_valid("{a: 1}") == 0.0
    assert json_valid("Sure! {\"a\": 1}") == 0.0


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}


def test_json_schema():
    assert json_schema('{"name": "Ada", "age": 36}', SCHEMA) == 1.0
    assert json_schema('```json\n{"name": "Ada"}\n```', SCHEMA) == 1.0
    assert json_schema('{"age": 36}', SCHEMA) == 0.0
    assert json_schema('{"name": "Ada", "age": "old"}', SCHEMA) == 0.0
    assert json_schema("not json", SCHEMA) == 0.0


# ------------------------------------------------------------- entity_f1


def test_parse_entities_shapes():
    want = [("person", "ada lovelace"), ("city", "london")]
    assert sorted(parse_entities('{"person": ["Ada  Lovelace"], "city": "London"}')) == sorted(want)
    assert sorted(parse_entities("person: Ada Lovelace\n- city: London.")) == sorted(want)
    assert sorted(parse_entities({"person": ["Ada Lovelace"], "city": ["London"]})) == sorted(want)
    assert sorted(parse_entities([{"label": "person", "text": "Ada Lovelace"}, {"label": "city", "text": "London"}])) \
        == sorted(want)
    assert parse_entities("I found nothing") == []


def test_entity_f1():
    gold = {"person": ["Ada Lovelace", "Charles Babbage"], "city": ["London"]}
    assert entity_f1('{"person": ["ada lovelace", "Charles Babbage"], "city": ["London"]}', gold) == 1.0
    assert entity_f1("person: Ada Lovelace\ncity: London\ncity: Paris", json.dumps(gold)) == pytest.approx(2 / 3)
    assert entity_f1("city: Ada Lovelace", gold) == 0.0
    assert entity_f1("{}", {}) == 1.0
    assert entity_f1("nothing", {"person": []}) == 1.0
    assert entity_f1("person: Ada", {}) == 0.0
    assert entity_f1("person: Ada", None) is None
    # multiset: a repeated prediction counts once against one gold mention
    assert entity_f1('{"person": ["Ada", "Ada"]}', {"person": ["Ada"]}) == pytest.approx(2 / 3)


# ---------------------------------------------------------- length_penalty


def test_length_penalty():
    assert length_penalty("x" * 200) == 1.0
    assert length_penalty("x" * 100) == 0.5
    assert length_penalty("x" * 300) == 0.5
    assert length_penalty("x" * 500) == 0.0
    assert length_penalty("") == 0.0
    assert length_penalty("x" * 10, target_length=10) == 1.0
    assert length_penalty("x" * 12, target_length=10, max_length=11) == 0.0


# ------------------------------------------------------------- parsing


def test_parse_reward_type_string_and_list():
    [spec] = parse_reward_type("numeric_match")
    assert (spec.type, spec.weight, spec.params) == ("numeric_match", 1.0, {})
    specs = parse_reward_type([{"type": "regex_match", "weight": 0.5, "pattern": "x"}, "json_valid"])
    assert [(s.type, s.weight, s.params) for s in specs] == [("regex_match", 0.5, {"pattern": "x"}),
                                                             ("json_valid", 1.0, {})]
    # round trip: params stay extra keys
    assert RewardSpec.model_validate(specs[0].model_dump()).model_dump() == specs[0].model_dump()


@pytest.mark.parametrize("value, loc, typ", [
    ([], (), "too_short"),
    ({"type": "numeric_match"}, (), "list_type"),
    (3, (), "list_type"),
    ([{"weight": 1.0}], (0, "type"), "missing"),
    (["numeric_match", 7], (1,), "dict_type"),
])
def test_parse_reward_type_errors(value, loc, typ):
    with pytest.raises(RewardParseError) as exc:
        parse_reward_type(value)
    assert (exc.value.errors[0][0], exc.value.errors[0][2]) == (loc, typ)
    assert isinstance(exc.value, ValueError)
    assert validate_rewards(value, None)[0][2] == typ


# ------------------------------------------------------------ validation


def errors_of(value, columns=None):
    return validate_rewards(parse_reward_type(value), columns)


def test_validate_all_good():
    value = [
        {"type": "exact_match"}, {"type": "numeric_match", "column": "solution", "tolerance": 0.01},
        {"type": "regex_match", "pattern": r"####\s*\d+", "full": False}, {"type": "contains", "text": "####"},
        {"type": "contains", "column": "keyword"}, {"type": "json_valid"}, {"type": "json_schema", "schema": SCHEMA},
        {"type": "entity_f1"}, {"type": "length_penalty", "target_length": 50, "max_length": 100, "weight": 0.1},
    ]
    assert errors_of(value, {"prompt", "answer", "solution", "keyword", "entities"}) == []
    assert errors_of("numeric_match", {"prompt", "answer"}) == []
    assert errors_of("numeric_match", None) == []


def test_validate_unknown_type_suggests():
    [(loc, msg, typ)] = errors_of("numeric_matc")
    assert (loc, typ) == ((), "unknown_reward_type")
    assert "did you mean `numeric_match`" in msg and "exact_match" in msg and "length_penalty" in msg
    [(loc, msg, typ)] = errors_of([{"type": "exact_mach"}])
    assert loc == (0, "type") and "did you mean `exact_match`" in msg


def test_validate_missing_required_param():
    [(loc, msg, typ)] = errors_of([{"type": "json_valid"}, {"type": "regex_match"}])
    assert (loc, typ) == ((1, "pattern"), "missing")
    assert "regex_match" in msg


def test_validate_unknown_param_lists_valid_ones():
    [(loc, msg, typ)] = errors_of([{"type": "exact_match", "colum": "answer"}])
    assert (loc, typ) == ((0, "colum"), "extra_forbidden")
    assert "column, ignore_case, strip" in msg


def test_validate_missing_column():
    [(loc, msg, typ)] = errors_of([{"type": "numeric_match", "column": "solution"}], {"prompt", "answer"})
    assert (loc, typ) == ((0, "column"), "reward_column_missing")
    assert "`solution`" in msg and "answer, prompt" in msg
    # the default column, not set by the user: the error sits on the reward itself
    [(loc, msg, typ)] = errors_of("numeric_match", {"prompt", "solution"})
    assert (loc, typ) == ((), "reward_column_missing") and "`answer`" in msg
    [(loc, _, typ)] = errors_of([{"type": "contains", "column": "kw"}], {"prompt"})
    assert (loc, typ) == ((0, "column"), "reward_column_missing")


def test_validate_bad_regex():
    [(loc, msg, typ)] = errors_of([{"type": "regex_match", "pattern": "(unclosed"}])
    assert (loc, typ) == ((0, "pattern"), "value_error")
    assert "not a valid regular expression" in msg


def test_validate_bad_schema():
    [(loc, msg, typ)] = errors_of([{"type": "json_schema", "schema": {"type": "objekt"}}])
    assert (loc, typ) == ((0, "schema"), "value_error")
    assert "not a valid JSON Schema" in msg
    [(loc, _, typ)] = errors_of([{"type": "json_schema"}])
    assert (loc, typ) == ((0, "schema"), "missing")


def test_validate_contains_needs_one_source():
    [(loc, msg, typ)] = errors_of([{"type": "contains"}])
    assert (loc, typ) == ((0,), "value_error") and "needs exactly one of `text`" in msg
    assert errors_of([{"type": "contains", "text": "a", "column": "b"}])[0][2] == "value_error"


def test_validate_length_penalty_params():
    assert errors_of([{"type": "length_penalty", "target_length": 0}])[0][:1] == ((0, "target_length"),)
    [(loc, msg, _)] = errors_of([{"type": "length_penalty", "target_length": 100, "max_length": 50}])
    assert loc == (0,) and "max_length" in msg


def test_validate_weight_not_finite():
    [(loc, _, typ)] = errors_of([{"type": "json_valid", "weight": math.inf}])
    assert (loc, typ) == ((0, "weight"), "value_error")


def test_validate_reports_every_problem():
    errors = errors_of([{"type": "nope"}, {"type": "regex_match", "pattern": "("},
                        {"type": "exact_match", "column": "gold"}], {"prompt"})
    assert [(e[0], e[2]) for e in errors] == [((0, "type"), "unknown_reward_type"), ((1, "pattern"), "value_error"),
                                              ((2, "column"), "reward_column_missing")]


# ------------------------------------------------------------------ custom


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def my_reward(completions, prompts, **columns):
            return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, columns["answer"])]

        def seen_kwargs(completions, prompts, **columns):
            seen_kwargs.last = {"prompts": prompts, **columns}
            return [0.5] * len(completions)

        def short(completions, prompts, **columns):
            return [1.0]

        def not_a_list(completions, prompts, **columns):
            return 1.0

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_rewards", None)
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_validate_custom(reward_module):
    assert errors_of([{"type": "custom", "function": "my_rewards:my_reward", "columns": ["answer"]}],
                     {"prompt", "answer"}) == []
    [(loc, msg, typ)] = errors_of([{"type": "custom", "function": "no_such_module_xyz:f"}])
    assert (loc, typ) == ((0, "function"), "custom_reward_not_found") and "no_such_module_xyz" in msg
    [(loc, msg, typ)] = errors_of([{"type": "custom", "function": "my_rewards:missing"}])
    assert (loc, typ) == ((0, "function"), "custom_reward_not_found") and "no attribute `missing`" in msg
    [(loc, msg, typ)] = errors_of([{"type": "custom", "function": "my_rewards:NOT_CALLABLE"}])
    assert typ == "custom_reward_not_found" and "not a callable" in msg
    [(loc, _, typ)] = errors_of([{"type": "custom", "function": "just_a_name"}])
    assert (loc, typ) == ((0, "function"), "string_pattern_mismatch")
    [(loc, _, typ)] = errors_of([{"type": "custom", "function": "my_rewards:my_reward", "columns": ["gold"]}],
                                {"prompt", "answer"})
    assert (loc, typ) == ((0, "columns"), "reward_column_missing")


def test_custom_reward_called_with_columns(reward_module):
    funcs, weights = build_reward_funcs(parse_reward_type(
        [{"type": "custom", "function": "my_rewards:my_reward", "weight": 2.0},
         {"type": "custom", "function": "my_rewards:seen_kwargs"}]))
    assert [f.__name__ for f in funcs] == ["my_reward", "seen_kwargs"] and weights == [2.0, 1.0]
    out = funcs[0](prompts=["q1", "q2"], completions=["4", "5"], answer=["4", "4"], completion_ids=[[1], [2]],
                   trainer_state=object(), log_extra=None, log_metric=None)
    assert out == [1.0, 0.0]
    funcs[1](prompts=["q"], completions=["c"], answer=["a"], completion_ids=[[1]], trainer_state=object())
    import my_rewards

    assert my_rewards.seen_kwargs.last == {"prompts": ["q"], "answer": ["a"]}


def test_custom_reward_wrong_return(reward_module):
    [f], _ = build_reward_funcs(parse_reward_type([{"type": "custom", "function": "my_rewards:short"}]))
    with pytest.raises(ValueError, match="returned 1 reward.*for 3 completion"):
        f(prompts=["p"] * 3, completions=["a", "b", "c"])
    [g], _ = build_reward_funcs(parse_reward_type([{"type": "custom", "function": "my_rewards:not_a_list"}]))
    with pytest.raises(TypeError, match="must return a list of floats"):
        g(prompts=["p"], completions=["a"])


# ---------------------------------------------------------------- building


def test_build_reward_funcs_names_weights_shape():
    value = [
        {"type": "numeric_match", "weight": 1.0},
        {"type": "contains", "text": "####", "weight": 0.1},
        {"type": "contains", "column": "keyword", "weight": 0.2},
        {"type": "length_penalty", "target_length": 10, "weight": 0.05},
        {"type": "json_schema", "schema": SCHEMA},
    ]
    funcs, weights = build_reward_funcs(parse_reward_type(value))
    assert [f.__name__ for f in funcs] == ["numeric_match", "contains", "contains_2", "length_penalty", "json_schema"]
    assert weights == [1.0, 0.1, 0.2, 0.05, 1.0]
    completions = ["The answer is 72.\n#### 72", "I think 71, Paris", '{"name": "x"}']
    kwargs = {"answer": ["#### 72", "72", None], "keyword": ["answer", "paris", "x"],
              "completion_ids": [[1], [2], [3]], "trainer_state": object(), "log_extra": None, "log_metric": None}
    outs = [f(prompts=["q"] * 3, completions=completions, **kwargs) for f in funcs]
    assert all(len(o) == 3 for o in outs)
    assert outs[0] == [1.0, 0.0, None]
    assert outs[1] == [1.0, 0.0, 0.0]
    assert outs[2] == [1.0, 1.0, 1.0]
    assert outs[4] == [0.0, 0.0, 1.0]


def test_build_reward_funcs_conversational():
    [f], [w] = build_reward_funcs(parse_reward_type("numeric_match"))
    assert (f.__name__, w) == ("numeric_match", 1.0)
    prompts = [[{"role": "user", "content": "What is 6 * 12?"}]] * 2
    out = f(prompts=prompts, completions=[conv("6 * 12 = 72\n#### 72"), conv("#### 70")], answer=["72", "72"])
    assert out == [1.0, 0.0]
    [g], _ = build_reward_funcs(parse_reward_type([{"type": "entity_f1", "column": "gold"}]))
    assert g(prompts=prompts[:1], completions=[conv('```json\n{"person": ["Ada"]}\n```')],
             gold=[{"person": ["Ada"]}]) == [1.0]


def test_build_reward_funcs_accepts_raw_value_and_rejects_invalid():
    funcs, weights = build_reward_funcs("json_valid")
    assert funcs[0](prompts=["p"], completions=["{}"]) == [1.0] and weights == [1.0]
    with pytest.raises(ValueError, match=r"reward_type\.0\.pattern"):
        build_reward_funcs([{"type": "regex_match"}])


def test_missing_column_at_runtime_is_clear():
    [f], _ = build_reward_funcs("exact_match")
    with pytest.raises(ValueError, match="column `answer`, which the batch lacks"):
        f(prompts=["p"], completions=["a"], solution=["a"], completion_ids=[[1]])


def test_registry_is_documented():
    assert set(REWARDS) == {"exact_match", "numeric_match", "math_match", "regex_match", "contains", "json_valid",
                            "json_schema", "entity_f1", "length_penalty", "custom"}
    for name, defn in REWARDS.items():
        assert defn.name == name and defn.description
        assert defn.params_model.model_config.get("extra") == "forbid"
        for field_name, field in defn.params_model.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"


def test_import_stays_light():
    code = "import sys, felix_train.rewards; assert 'torch' not in sys.modules; assert 'jsonschema' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_rewards_live_one_family_a_module_and_are_reexported():
    from felix_train.rewards import (
        accuracy_rewards,
        custom_rewards,
        format_rewards,
        length_rewards,
        ner_rewards,
        text,
    )

    families = {
        accuracy_rewards: ["exact_match", "numeric_match", "extract_final_number", "math_match", "ExactMatchParams",
                           "NumericMatchParams", "MathMatchParams"],
        format_rewards: ["regex_match", "contains", "json_valid", "json_schema", "RegexMatchParams", "ContainsParams",
                 "JsonValidParams", "JsonSchemaParams"],
        ner_rewards: ["entity_f1", "parse_entities", "EntityF1Params"],
        length_rewards: ["length_penalty", "LengthPenaltyParams"],
        custom_rewards: ["custom", "CustomParams"],
        text: ["completion_text"],
    }
    for module, names in families.items():
        for name in names:
            assert getattr(rewards_pkg, name) is getattr(module, name), f"felix_train.rewards.{name}"
    for name, defn in REWARDS.items():
        assert defn.params_model.__module__.startswith("felix_train.rewards."), name


def test_a_batch_reward_built_per_completion_is_a_clear_error():
    """Was an `assert` (skipped under `python -O`): a reward without a per-completion `score` raises ValueError."""
    batchy = RewardDef("batchy", lambda **kw: [], rewards_pkg.JsonValidParams, lambda p: (), "scores a batch")
    with pytest.raises(ValueError, match=r"reward `batchy` has no per-completion `score`.*give its `RewardDef` a "
                                         r"`score`, or build it as a batch reward"):
        rewards_pkg._per_completion_func(batchy, rewards_pkg.JsonValidParams(), "batchy")
