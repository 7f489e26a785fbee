"""Accuracy rewards: does the completion give the gold answer? `exact_match`, `numeric_match` (GSM8K style,
through `extract_final_number`), with their params models."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from felix_train.rewards.text import completion_text


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
