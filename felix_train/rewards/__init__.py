"""GRPO rewards: the library behind `rl_config.reward_type`.

`reward_type` is a reward name (`numeric_match`: weight 1, default params) or a
list of `{type, weight, ...params}` objects::

    reward_type:
      - {type: numeric_match, weight: 1.0}
      - {type: regex_match, weight: 0.2, pattern: "####\\s*-?\\d"}
      - {type: custom, function: "my_rewards:brevity", columns: [answer]}

Every reward is a pure function over one completion's text (plus the dataset
values it reads) returning a float in [0, 1]; the `custom` reward hands a whole
batch to a user function instead. `REWARDS` is the table: name -> `RewardDef`
(pure function, params model, columns read, description).

- `parse_reward_type(value)` turns the raw value into `RewardSpec`s.
- `validate_rewards(specs, dataset_columns)` lists every problem at once, as
  `(loc_suffix, msg, type)` with `loc_suffix` relative to `reward_type`.
- `build_reward_funcs(specs)` returns TRL `GRPOTrainer` reward callables
  `f(prompts, completions, **kwargs) -> list[float | None]` and their weights.

A reward returns `None` when it cannot judge a completion (the dataset row has no
gold value); TRL turns that into NaN and leaves it out of the weighted sum.

Only the standard library and pydantic are imported here (jsonschema lazily,
where a schema is checked): spec validation imports this module and never loads
torch.

The rewards live one family a module, named as TRL's `trl/rewards/` names them,
each with its params models: `accuracy_rewards` (exact_match, numeric_match,
extract_final_number, math_match), `format_rewards` (regex_match, contains, json_valid,
json_schema), `ner_rewards` (entity_f1, parse_entities), `length_rewards`
(length_penalty), `custom_rewards` (a user function), and `text` (completion_text
and the JSON helpers they share). This `__init__` is the
registry: `RewardSpec`, `parse_reward_type`, the `REWARDS` table,
`validate_rewards` and `build_reward_funcs`; every public name is importable
from `felix_train.rewards`.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from felix_train.rewards.accuracy_rewards import (
    ExactMatchParams,
    MathMatchParams,
    NumericMatchParams,
    exact_match,
    extract_final_number,
    math_match,
    numeric_match,
)
from felix_train.rewards.custom_rewards import CustomParams, _load_function, custom
from felix_train.rewards.format_rewards import (
    ContainsParams,
    JsonSchemaParams,
    JsonValidParams,
    RegexMatchParams,
    contains,
    json_schema,
    json_valid,
    regex_match,
)
from felix_train.rewards.length_rewards import LengthPenaltyParams, length_penalty
from felix_train.rewards.ner_rewards import EntityF1Params, entity_f1, parse_entities
from felix_train.rewards.text import completion_text

__all__ = [
    "REWARDS",
    "RewardDef",
    "RewardParseError",
    "RewardSpec",
    "build_reward_funcs",
    "completion_text",
    "contains",
    "entity_f1",
    "exact_match",
    "extract_final_number",
    "json_schema",
    "json_valid",
    "length_penalty",
    "math_match",
    "numeric_match",
    "parse_entities",
    "parse_reward_type",
    "regex_match",
    "validate_rewards",
]


# --------------------------------------------------------------------------- spec


class RewardSpec(BaseModel):
    """One entry of `reward_type`: the reward's name, its weight, and its params (the extra keys)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(..., description="Reward name, a key of `REWARDS` (e.g. `numeric_match`).")
    weight: float = Field(1.0, description="Weight of this reward in the sum TRL maximises (TRL `reward_weights`).")

    # True when the whole `reward_type` was a plain string: errors then sit at `reward_type` itself.
    _plain: bool = PrivateAttr(default=False)

    @property
    def params(self) -> dict[str, Any]:
        """The reward's params: every key besides `type` and `weight`."""
        return dict(self.model_extra or {})


class RewardParseError(ValueError):
    """`reward_type` is not a reward name nor a list of `{type, weight, ...params}`.

    `errors` lists every problem as `(loc_suffix, msg, type)`, like `validate_rewards`.
    """

    def __init__(self, errors: list[tuple[tuple, str, str]]):
        self.errors = list(errors)
        parts = [f"{'.'.join(str(p) for p in loc) + ': ' if loc else ''}{msg}" for loc, msg, _ in self.errors]
        super().__init__("; ".join(parts))


_SHAPE_HINT = "give a reward name (e.g. `numeric_match`) or a list of `{type, weight, ...params}`"


def parse_reward_type(value: Any) -> list[RewardSpec]:
    """Turn `rl_config.reward_type` into a list of `RewardSpec`.

    A string is one reward with weight 1 and no params; a list holds reward names
    or `{type, weight, ...params}` objects. Names and params are checked by
    `validate_rewards`, not here.

    Raises:
        RewardParseError: If the value has neither shape; `errors` lists every bad entry.
    """
    if isinstance(value, RewardSpec):
        value = [value]
    if isinstance(value, str):
        spec = RewardSpec(type=value.strip())
        spec._plain = True
        return [spec]
    if isinstance(value, Mapping):
        raise RewardParseError([((), f"`reward_type` is one object; {_SHAPE_HINT}: wrap it in a list", "list_type")])
    if not isinstance(value, (list, tuple)):
        raise RewardParseError([((), f"`reward_type` must be a string or a list, got {type(value).__name__}; "
                                     f"{_SHAPE_HINT}", "list_type")])
    if not value:
        raise RewardParseError([((), f"`reward_type` is an empty list; {_SHAPE_HINT}", "too_short")])
    specs: list[RewardSpec] = []
    errors: list[tuple[tuple, str, str]] = []
    for i, item in enumerate(value):
        if isinstance(item, RewardSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(RewardSpec(type=item.strip()))
        elif isinstance(item, Mapping):
            try:
                specs.append(RewardSpec.model_validate(dict(item)))
            except ValidationError as err:
                for e in err.errors():
                    errors.append(((i, *e["loc"]), _pydantic_msg(e), e["type"]))
        else:
            errors.append(((i,), f"expected a reward name or an object `{{type, weight, ...params}}`, "
                                 f"got {type(item).__name__}", "dict_type"))
    if errors:
        raise RewardParseError(errors)
    return specs


# --------------------------------------------------------------------- table


@dataclass(frozen=True)
class RewardDef:
    """One reward of the table.

    `score(params, text, row)` adapts the pure `fn` to a completion's text and the
    row's values of `columns(params)`; it is None for the batch-level `custom`.
    """

    name: str
    fn: Callable[..., Any]
    params_model: type[BaseModel]
    columns: Callable[[Any], tuple[str, ...]]
    description: str
    score: Callable[[Any, str, Mapping[str, Any]], float | None] | None = None


def _no_columns(params: Any) -> tuple[str, ...]:
    return ()


def _column(params: Any) -> tuple[str, ...]:
    return (params.column,)


REWARDS: dict[str, RewardDef] = {
    d.name: d
    for d in [
        RewardDef("exact_match", exact_match, ExactMatchParams, _column,
                  "1 if the completion equals the gold answer column (stripped), else 0.",
                  lambda p, t, row: exact_match(t, row[p.column], ignore_case=p.ignore_case, strip=p.strip)),
        RewardDef("numeric_match", numeric_match, NumericMatchParams, _column,
                  "1 if the completion's final number (#### / \\boxed{} / 'answer is' / last number) equals the "
                  "gold answer's, else 0 (GSM8K style).",
                  lambda p, t, row: numeric_match(t, row[p.column], tolerance=p.tolerance)),
        RewardDef("math_match", math_match, MathMatchParams, _column,
                  "1 if the completion's final answer equals the gold answer mathematically (math-verify: LaTeX, "
                  "\\boxed{}, fractions, 1/2 vs 0.5, sets, intervals), else 0; 0 when it gives no parsable answer.",
                  lambda p, t, row: math_match(t, row[p.column], timeout_seconds=p.timeout_seconds)),
        RewardDef("regex_match", regex_match, RegexMatchParams, _no_columns,
                  "1 if the completion matches `pattern` (search, or fullmatch with `full`), else 0.",
                  lambda p, t, row: regex_match(t, p.pattern, full=p.full, ignore_case=p.ignore_case)),
        RewardDef("contains", contains, ContainsParams, lambda p: (p.column,) if p.column else (),
                  "1 if the completion contains `text` (or the row's `column` value), else 0.",
                  lambda p, t, row: contains(t, row[p.column] if p.column else p.text, ignore_case=p.ignore_case)),
        RewardDef("json_valid", json_valid, JsonValidParams, _no_columns,
                  "1 if the completion (or its ```json block) parses as JSON, else 0.",
                  lambda p, t, row: json_valid(t)),
        RewardDef("json_schema", json_schema, JsonSchemaParams, _no_columns,
                  "1 if the completion (or its ```json block) parses as JSON valid against `schema`, else 0.",
                  lambda p, t, row: json_schema(t, p.schema_)),
        RewardDef("entity_f1", entity_f1, EntityF1Params, _column,
                  "F1 of predicted vs gold (label, mention) pairs; the completion is JSON {label: [mentions]} or "
                  "`label: mention` lines.",
                  lambda p, t, row: entity_f1(t, row[p.column])),
        RewardDef("length_penalty", length_penalty, LengthPenaltyParams, _no_columns,
                  "1 - min(1, |chars - target_length| / target_length); 0 beyond `max_length`.",
                  lambda p, t, row: length_penalty(t, target_length=p.target_length, max_length=p.max_length)),
        RewardDef("custom", custom, CustomParams, lambda p: tuple(p.columns),
                  "A user function `module:function(completions, prompts, **columns) -> list[float]`."),
    ]
}


# ---------------------------------------------------------------- validation


def _pydantic_msg(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def validate_rewards(specs: Any, dataset_columns: set[str] | None) -> list[tuple[tuple, str, str]]:
    """Every problem of the rewards, as `(loc_suffix, msg, type)`; empty when all is well.

    `loc_suffix` is relative to `reward_type`: `(i, "param")` for entry `i` of a
    list, `()` for a plain-string `reward_type`. `specs` may also be the raw
    `reward_type` value (parse errors are then reported too). With
    `dataset_columns` (None: unknown), each reward must read only columns present.
    Error types: `unknown_reward_type`, pydantic's (`missing`, `extra_forbidden`,
    `value_error`, ...), `reward_column_missing`, `custom_reward_not_found`.
    """
    if not (isinstance(specs, list) and all(isinstance(s, RewardSpec) for s in specs)) or not specs:
        try:
            specs = parse_reward_type(specs)
        except RewardParseError as err:
            return list(err.errors)
    plain = len(specs) == 1 and specs[0]._plain
    errors: list[tuple[tuple, str, str]] = []
    for i, spec in enumerate(specs):
        base: tuple = () if plain else (i,)
        if not math.isfinite(spec.weight):
            errors.append(((*base, "weight"), f"`weight` must be a finite number, got {spec.weight}; "
                                              "use e.g. `weight: 1.0`", "value_error"))
        defn = REWARDS.get(spec.type)
        if defn is None:
            close = difflib.get_close_matches(spec.type, list(REWARDS), n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`? " if close else ""
            errors.append(((*base, "type") if not plain else base,
                           f"unknown reward type {spec.type!r}; {hint}valid types: {', '.join(sorted(REWARDS))}",
                           "unknown_reward_type"))
            continue
        try:
            params = defn.params_model.model_validate(spec.params)
        except ValidationError as err:
            fields = ", ".join(f.alias or n for n, f in defn.params_model.model_fields.items()) or "none"
            for e in err.errors():
                msg = f"`{defn.name}`: {_pydantic_msg(e)}"
                if e["type"] == "extra_forbidden":
                    msg += f"; `{defn.name}` params are: {fields}"
                errors.append(((*base, *e["loc"]), msg, e["type"]))
            continue
        if dataset_columns is not None:
            param = "columns" if defn.name == "custom" else "column"
            where = (*base, param) if param in spec.params else base
            for col in defn.columns(params):
                if col not in dataset_columns:
                    have = ", ".join(sorted(dataset_columns)) or "none"
                    errors.append((where, f"reward `{defn.name}` reads column `{col}`, which the dataset lacks "
                                          f"(dataset columns: {have}); add the column to the data or set "
                                          f"`{param}` to one of the dataset's columns", "reward_column_missing"))
        if defn.name == "custom":
            try:
                _load_function(params.function)
            except LookupError as err:
                errors.append(((*base, "function"), str(err), "custom_reward_not_found"))
    return errors


# ------------------------------------------------------------------ building


# what TRL's GRPOTrainer passes besides the dataset columns
_TRL_EXTRA_KWARGS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


def _row_columns(kwargs: Mapping[str, Any], columns: tuple[str, ...], n: int, name: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for col in columns:
        if col not in kwargs:
            have = ", ".join(sorted(k for k in kwargs if k not in _TRL_EXTRA_KWARGS)) or "none"
            raise ValueError(f"reward `{name}` reads column `{col}`, which the batch lacks (columns: {have}); "
                             f"add it to the dataset or set the reward's `column`")
        values = list(kwargs[col])
        if len(values) != n:
            raise ValueError(f"reward `{name}`: column `{col}` has {len(values)} value(s) for {n} completion(s)")
        out[col] = values
    return out


def _per_completion_func(defn: RewardDef, params: Any, name: str) -> Callable[..., list[float | None]]:
    columns = defn.columns(params)
    score = defn.score
    if score is None:
        raise ValueError(f"reward `{defn.name}` has no per-completion `score`: it scores a whole batch, so it cannot "
                         "be built as a per-completion reward; give its `RewardDef` a `score`, or build it as a "
                         "batch reward as `custom` is")

    def reward_func(prompts=None, completions=None, **kwargs) -> list[float | None]:
        completions = list(completions or [])
        cols = _row_columns(kwargs, columns, len(completions), name)
        return [score(params, completion_text(c), {col: cols[col][j] for col in columns})
                for j, c in enumerate(completions)]

    return reward_func


def _custom_func(params: CustomParams, name: str) -> Callable[..., list[float | None]]:
    function = _load_function(params.function)

    def reward_func(prompts=None, completions=None, **kwargs) -> list[float | None]:
        completions = list(completions or [])
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_EXTRA_KWARGS}
        return custom(function, completions=completions, prompts=prompts, columns=columns, name=params.function)

    return reward_func


def build_reward_funcs(specs: Any) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """TRL reward callables and their weights, for `GRPOTrainer(reward_funcs=..., args=GRPOConfig(reward_weights=...))`.

    Each callable is `f(prompts, completions, **kwargs) -> list[float | None]`: kwargs
    carry the dataset columns (one value per completion) and TRL extras such as
    `completion_ids` and `trainer_state`, which are ignored. `__name__` is the
    reward's name (`numeric_match`; a custom reward's function name); a name used
    again gets `_2`, `_3`, ... so TRL logs each as `rewards/<name>/mean`.

    Raises:
        ValueError: If the specs are invalid (every problem listed); see `validate_rewards`.
    """
    specs = parse_reward_type(specs) if not isinstance(specs, list) or not all(
        isinstance(s, RewardSpec) for s in specs) else specs
    errors = validate_rewards(specs, None)
    if errors:
        lines = [f"  reward_type{''.join(f'.{p}' for p in loc)}: {msg} [{typ}]" for loc, msg, typ in errors]
        raise ValueError("`reward_type` is invalid:\n" + "\n".join(lines))
    funcs: list[Callable[..., list[float | None]]] = []
    weights: list[float] = []
    seen: Counter[str] = Counter()
    for spec in specs:
        defn = REWARDS[spec.type]
        params = defn.params_model.model_validate(spec.params)
        base = params.function.split(":", 1)[1].rsplit(".", 1)[-1] if defn.name == "custom" else defn.name
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        func = _custom_func(params, name) if defn.score is None else _per_completion_func(defn, params, name)
        func.__name__ = func.__qualname__ = name
        funcs.append(func)
        weights.append(float(spec.weight))
    return funcs, weights
