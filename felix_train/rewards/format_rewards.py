"""Format rewards: does the completion have the asked-for shape? `regex_match`, `contains`, `json_valid`,
`json_schema` (jsonschema imported lazily, where a schema is checked), with their params models."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from felix_train.rewards.text import _NO_JSON, _parse_json


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
