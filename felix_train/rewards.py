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
"""

from __future__ import annotations

import difflib
import functools
import importlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

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


# ----------------------------------------------------------------- text helpers


def completion_text(value: Any) -> str:
    """Text of a completion or prompt, plain or conversational.

    A string is returned as is; a conversational value (a list of
    `{"role", "content"}` messages, or one such message) gives its messages'
    contents joined by newlines; multimodal content parts contribute their `text`.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _content_text(value.get("content"))
    if isinstance(value, Sequence):
        return "\n".join(t for t in (completion_text(m) for m in value) if t)
    return str(value)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # [{"type": "text", "text": "..."}, ...]
        parts = [p.get("text") or "" if isinstance(p, Mapping) else str(p) for p in content]
        return "".join(parts)
    return str(content)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def _json_text(text: str) -> str:
    """The JSON part of a completion: the first ```json (or bare ```) fenced block if any, else the whole text."""
    blocks = _FENCE.findall(text)
    for lang, body in blocks:
        if lang.lower() == "json":
            return body.strip()
    for lang, body in blocks:
        if not lang:
            return body.strip()
    return text.strip()


_NO_JSON = object()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(_json_text(text))
    except (json.JSONDecodeError, ValueError):
        return _NO_JSON


# ------------------------------------------------------------- pure functions


def exact_match(completion: str, answer: Any, *, ignore_case: bool = False, strip: bool = True) -> float | None:
    """1.0 if the completion equals the gold answer, else 0.0; None when there is no gold answer."""
    if answer is None:
        return None
    a, b = completion, str(answer)
    if strip:
        a, b = a.strip(), b.strip()
    if ignore_case:
        a, b = a.casefold(), b.casefold()
    return 1.0 if a == b else 0.0


# a number: optional sign (not after a word char, so `3-5` reads 3 and 5), optional `$`,
# digits with thousands commas (`1,080`) or plain, optional decimals; a trailing `.` is not part of it
_NUMBER = re.compile(
    r"(?:(?<![\w.])[-−])?\$?\s?(?:(?<![\d,])\d{1,3}(?:,\d{3}(?!\d))+|\d+)(?:\.\d+)?(?![\d])"
    r"|(?:(?<![\w.])[-−])?\$?\.\d+"
)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_FRAC = re.compile(r"\\d?frac\s*\{\s*([-−]?\d+(?:\.\d+)?)\s*\}\s*\{\s*([-−]?\d+(?:\.\d+)?)\s*\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|=|:)\s*(?:[:=]\s*)?", re.IGNORECASE)


def _to_float(token: str) -> float | None:
    cleaned = token.replace("$", "").replace(",", "").replace("−", "-").replace(" ", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _numbers(text: str) -> list[float]:
    return [v for v in (_to_float(m.group(0)) for m in _NUMBER.finditer(text)) if v is not None]


def extract_final_number(text: Any) -> float | None:
    """The final answer of a GSM8K-style text, or None if it holds no number.

    In order of preference: the first number after the last `####`; the last
    `\\boxed{...}` (a `\\frac{a}{b}` inside it counts); the first number after the
    last "answer is" / "answer:"; the last number in the text. Thousands commas,
    `$`, `%`, units and a trailing `.` are ignored; ints and floats pass through.
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    text = completion_text(text)
    if "####" in text:
        found = _numbers(text.rsplit("####", 1)[1])
        if found:
            return found[0]
    boxed = _BOXED.findall(text)
    if boxed:
        inner = boxed[-1]
        frac = _FRAC.search(inner)
        if frac:
            num, den = _to_float(frac.group(1)), _to_float(frac.group(2))
            if num is not None and den:
                return num / den
        found = _numbers(inner)
        if found:
            return found[0]
    said = list(_ANSWER_IS.finditer(text))
    if said:
        found = _numbers(text[said[-1].end():])
        if found:
            return found[0]
    found = _numbers(text)
    return found[-1] if found else None


def numeric_match(completion: str, answer: Any, *, tolerance: float = 1e-6) -> float | None:
    """1.0 if the completion's final number equals the gold answer's, else 0.0.

    Both sides go through `extract_final_number`, so a GSM8K gold rationale ending in
    `#### 72` works as is. Equal means within `tolerance`, absolute or relative.
    None when the gold answer holds no number.
    """
    gold = extract_final_number(answer)
    if gold is None:
        return None
    got = extract_final_number(completion)
    if got is None:
        return 0.0
    return 1.0 if math.isclose(got, gold, rel_tol=tolerance, abs_tol=tolerance) else 0.0


def regex_match(completion: str, pattern: str, *, full: bool = False, ignore_case: bool = False) -> float:
    """1.0 if `pattern` is found in the completion (`full`: matches all of the stripped completion), else 0.0."""
    regex = _compile(pattern, re.IGNORECASE if ignore_case else 0)
    found = regex.fullmatch(completion.strip()) if full else regex.search(completion)
    return 1.0 if found else 0.0


@functools.lru_cache(maxsize=256)
def _compile(pattern: str, flags: int) -> re.Pattern:
    return re.compile(pattern, flags)


def contains(completion: str, text: Any, *, ignore_case: bool = True) -> float | None:
    """1.0 if `text` occurs in the completion, else 0.0; None when `text` is missing or empty."""
    if text is None or str(text) == "":
        return None
    needle, hay = str(text), completion
    if ignore_case:
        needle, hay = needle.casefold(), hay.casefold()
    return 1.0 if needle in hay else 0.0


def json_valid(completion: str) -> float:
    """1.0 if the completion (or its ```json fenced block) parses as JSON, else 0.0."""
    return 0.0 if _parse_json(completion) is _NO_JSON else 1.0


def json_schema(completion: str, schema: Mapping[str, Any]) -> float:
    """1.0 if the completion (or its ```json fenced block) parses as JSON valid against `schema`, else 0.0."""
    data = _parse_json(completion)
    if data is _NO_JSON:
        return 0.0
    return 1.0 if _schema_validator(json.dumps(schema, sort_keys=True)).is_valid(data) else 0.0


@functools.lru_cache(maxsize=64)
def _schema_validator(schema_json: str):
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _check_schema(schema: Mapping[str, Any]) -> None:
    """Raise ValueError if `schema` is not a valid JSON Schema (jsonschema's `check_schema`)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        raise ValueError(f"`schema` is not a valid JSON Schema{f' at {where}' if where else ''}: {err.message}") from err


_LINE_ENTITY = re.compile(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)?([^:\n]+?)\s*:\s*(.+?)\s*$")
_EDGE_PUNCT = " \t\"'`“”‘’.,;:!?()[]{}<>"


def _norm(text: Any) -> str:
    return " ".join(str(text).casefold().split()).strip(_EDGE_PUNCT)


def parse_entities(value: Any) -> list[tuple[str, str]]:
    """(label, mention) pairs, normalised (casefolded, whitespace collapsed, edge punctuation stripped).

    Accepts a dict `{label: [mention, ...]}` (a single string mention is allowed),
    a list of `{"label", "text"}` objects, a JSON string (or ```json block) of either,
    or lines `label: mention`. Anything else gives no entities.
    """
    if value is None:
        return []
    if isinstance(value, str):
        data = _parse_json(value)
        if data is _NO_JSON or not isinstance(data, (dict, list)):
            pairs = []
            for line in value.splitlines():
                m = _LINE_ENTITY.match(line)
                if m:
                    pairs.append((m.group(1), m.group(2)))
            return [(_norm(label), _norm(mention)) for label, mention in pairs if _norm(label) and _norm(mention)]
        value = data
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        for label, mentions in value.items():
            if mentions is None:
                continue
            for mention in (mentions if isinstance(mentions, (list, tuple)) else [mentions]):
                pairs.append((label, mention))
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Mapping):
                label = item.get("label", item.get("type"))
                mention = item.get("text", item.get("mention"))
                if label is not None and mention is not None:
                    pairs.append((label, mention))
    return [(_norm(label), _norm(mention)) for label, mention in pairs
            if not isinstance(mention, (dict, list)) and _norm(label) and _norm(mention)]


def entity_f1(completion: str, entities: Any) -> float | None:
    """F1 between predicted and gold (label, mention) multisets; 1.0 when both are empty.

    The completion and the gold value are read by `parse_entities`. None when the
    dataset row has no gold value (`entities` is None).
    """
    if entities is None:
        return None
    pred, gold = Counter(parse_entities(completion)), Counter(parse_entities(entities))
    if not pred and not gold:
        return 1.0
    hits = sum((pred & gold).values())
    if hits == 0:
        return 0.0
    precision, recall = hits / sum(pred.values()), hits / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


def length_penalty(completion: str, *, target_length: int = 200, max_length: int | None = None) -> float:
    """`1 - min(1, |len - target_length| / target_length)` over characters; 0.0 beyond `max_length`.

    1.0 at exactly `target_length` characters, falling linearly to 0.0 at 0 and at
    twice the target.
    """
    n = len(completion)
    if max_length is not None and n > max_length:
        return 0.0
    return 1.0 - min(1.0, abs(n - target_length) / target_length)


def custom(function: Callable[..., Any], *, completions: list, prompts: list | None,
           columns: Mapping[str, list], name: str = "custom") -> list[float | None]:
    """Call a user reward `function(completions=..., prompts=..., **columns)` and check its result.

    `completions` and `prompts` are passed as TRL gives them (strings or message
    lists; `completion_text` turns either into text).

    Raises:
        TypeError: If the function does not return a list of numbers (or None).
        ValueError: If it returns a number of rewards other than one per completion.
    """
    out = function(completions=completions, prompts=prompts, **columns)
    if not isinstance(out, (list, tuple)):
        raise TypeError(f"custom reward `{name}` returned {type(out).__name__}; it must return a list of floats, "
                        f"one per completion ({len(completions)})")
    if len(out) != len(completions):
        raise ValueError(f"custom reward `{name}` returned {len(out)} reward(s) for {len(completions)} "
                         f"completion(s); return exactly one float (or None) per completion")
    rewards: list[float | None] = []
    for j, r in enumerate(out):
        if r is None:
            rewards.append(None)
        elif isinstance(r, (int, float)):
            rewards.append(float(r))
        else:
            raise TypeError(f"custom reward `{name}` returned {type(r).__name__} at position {j}; "
                            "each reward must be a float (or None)")
    return rewards


def _load_function(ref: str) -> Callable[..., Any]:
    """Import `module:function` (the function may be a dotted attribute path).

    Raises:
        LookupError: If the module cannot be imported, lacks the attribute, or the attribute is not callable.
    """
    module_name, _, attr_path = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # an import runs user code: any failure means "cannot import"
        raise LookupError(f"cannot import module `{module_name}` of `{ref}`: {type(err).__name__}: {err}; "
                          "make it importable (on PYTHONPATH) or fix the name") from err
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise LookupError(f"module `{module_name}` has no attribute `{attr_path}`; "
                              f"check the function name in `{ref}`") from err
    if not callable(obj):
        raise LookupError(f"`{ref}` is a {type(obj).__name__}, not a callable; point `function` at a function "
                          "`f(completions, prompts, **columns) -> list[float]`")
    return obj


# ------------------------------------------------------------- params models


class ExactMatchParams(BaseModel):
    """Params of `exact_match`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("answer", min_length=1, description="Dataset column holding the gold answer.")
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    strip: bool = Field(True, description="Strip surrounding whitespace from both sides before comparing.")


class NumericMatchParams(BaseModel):
    """Params of `numeric_match`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("answer", min_length=1, description="Dataset column holding the gold answer (a number, or a "
                        "text whose final number is the answer, e.g. a GSM8K rationale ending in `#### 72`).")
    tolerance: float = Field(1e-6, ge=0, allow_inf_nan=False,
                             description="Largest difference (absolute, or relative to the larger value) still equal.")


class RegexMatchParams(BaseModel):
    """Params of `regex_match`."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(..., min_length=1, description="Python regular expression (`re` syntax).")
    full: bool = Field(False, description="Require the whole stripped completion to match (`re.fullmatch`) instead "
                       "of finding the pattern anywhere (`re.search`).")
    ignore_case: bool = Field(False, description="Match case-insensitively.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"`pattern` is not a valid regular expression: {err}; fix it (Python `re` syntax)") from err
        return v


class ContainsParams(BaseModel):
    """Params of `contains`: exactly one of `text` and `column`."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, description="Literal substring the completion must contain.")
    column: str | None = Field(None, min_length=1, description="Dataset column holding the substring, per row.")
    ignore_case: bool = Field(True, description="Match case-insensitively.")

    @model_validator(mode="after")
    def _one_source(self) -> "ContainsParams":
        if (self.text is None) == (self.column is None):
            got = "both" if self.text is not None else "neither"
            raise ValueError(f"needs exactly one of `text` (a literal) and `column` (a dataset column), "
                             f"got {got}; set one")
        return self


class JsonValidParams(BaseModel):
    """`json_valid` takes no params."""

    model_config = ConfigDict(extra="forbid")


class JsonSchemaParams(BaseModel):
    """Params of `json_schema`."""

    model_config = ConfigDict(extra="forbid")

    # `schema` would shadow BaseModel.schema(); the spec key stays `schema`
    schema_: dict[str, Any] = Field(..., alias="schema", description="JSON Schema the parsed completion must satisfy "
                                    "(checked with jsonschema's `check_schema` at validation time).")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_schema(v)
        return v


class EntityF1Params(BaseModel):
    """Params of `entity_f1`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("entities", min_length=1, description="Dataset column holding the gold entities: a dict "
                        "`{label: [mention, ...]}` or a JSON string of it.")


class LengthPenaltyParams(BaseModel):
    """Params of `length_penalty`."""

    model_config = ConfigDict(extra="forbid")

    target_length: int = Field(200, gt=0, description="Completion length in characters that scores 1.0.")
    max_length: int | None = Field(None, gt=0, description="Hard cap in characters; longer completions score 0.0.")

    @model_validator(mode="after")
    def _cap_above_target(self) -> "LengthPenaltyParams":
        if self.max_length is not None and self.max_length < self.target_length:
            raise ValueError(f"`max_length` ({self.max_length}) must be >= `target_length` ({self.target_length}); "
                             "raise `max_length` or lower `target_length`")
        return self


class CustomParams(BaseModel):
    """Params of `custom`."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(..., pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                          description="Importable reward `module:function`, called as "
                          "`function(completions=..., prompts=..., **columns)`, returning one float per completion.")
    columns: list[str] = Field(default_factory=list, description="Dataset columns the function reads; checked to "
                               "exist at validation time (every column is passed regardless).")


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
    assert score is not None

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
