"""The `custom` reward: a user function `module:function(completions, prompts, **columns) -> list[float]`,
imported by `_load_function` and checked by `custom`, with its params model."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class CustomParams(BaseModel):
    """Params of `custom`."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(..., pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                          description="Importable reward `module:function`, called as "
                          "`function(completions=..., prompts=..., **columns)`, returning one float per completion.")
    columns: list[str] = Field(default_factory=list, description="Dataset columns the function reads; checked to "
                               "exist at validation time (every column is passed regardless).")
