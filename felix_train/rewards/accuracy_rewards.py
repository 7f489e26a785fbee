"""Accuracy rewards: does the completion give the gold answer? `exact_match`, `numeric_match` (GSM8K style,
through `extract_final_number`), `math_match` (LaTeX answers through Hugging Face's `math-verify`), with their
params models.

`math_verify` (and sympy under it) is imported inside `math_match` only, so validating a spec never loads it.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from felix_train.rewards.text import completion_text

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------- math_match

# the answer already says where its maths is: `$...$`, `\(...\)`, `\[...\]` or `\boxed{...}`
_LATEX_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")
# bare LaTeX (`\frac{1}{2}`, `2^{10}`, `\{1,2\}`): math-verify reads it only between `$...$`
_BARE_LATEX = re.compile(r"[\\^_{}]")
_off_main_thread_warned = False


def _math_verify():
    try:
        import math_verify
    except ImportError as err:
        raise ImportError("reward `math_match` needs the `math-verify` package, which is not installed; "
                          "run `pip install math-verify` (it is in felix-train's dependencies)") from err
    return math_verify


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple:
    """The gold answer parsed by math-verify (empty when it holds no maths); cached, as each prompt's gold is
    scored once per generation. Bare LaTeX (a backslash, `^`, `_` or braces, no `$`) is tried between `$...$`
    first; plain text is parsed as it is (between `$...$` its words would read as products of symbols)."""
    math_verify = _math_verify()
    forms = [gold]
    if not _LATEX_DELIMITED.search(gold) and _BARE_LATEX.search(gold):
        forms = [f"${gold}$", gold]
    for form in forms:
        parsed = math_verify.parse(form, parsing_timeout=timeout)
        if parsed:
            return tuple(parsed)
    return ()


def _signal_timeout(timeout_seconds: int) -> int | None:
    """`timeout_seconds` in the main thread; None elsewhere, as math-verify's timeout is `signal.alarm`, which
    only the main thread may set (it raises ValueError in any other)."""
    global _off_main_thread_warned
    if threading.current_thread() is threading.main_thread():
        return timeout_seconds
    if not _off_main_thread_warned:
        _off_main_thread_warned = True
        logger.warning("math_match runs outside the main thread: math-verify's timeouts (signal.alarm) are off "
                       "there, so a pathological completion may parse slowly; call the reward from the main "
                       "thread (as TRL's GRPOTrainer does) to keep them")
    return None


def math_match(completion: str, answer: Any, *, timeout_seconds: int = 5) -> float | None:
    """1.0 if the completion's final answer equals the gold answer mathematically (math-verify), else 0.0.

    The gold answer may be LaTeX (`\\frac{1}{2}`, `$\\{1,2\\}$`, `\\boxed{[1, 3)}`), a plain number or
    expression (`0.5`, `1/2`), or a GSM8K rationale ending in `#### 72`. The completion's answer is found as
    math-verify finds it (`\\boxed{}` first, then "the answer is", then the last expression), so `0.5` matches
    `\\frac{1}{2}` and `{1,3} \\cup {2,4}` matches `{1,2,3,4}`. A completion with no parsable answer scores
    0.0; None when the gold answer holds no maths (TRL leaves the row out). Parsing and each comparison stop
    after `timeout_seconds` (a timeout scores 0.0) in the main thread; in other threads math-verify cannot time
    out and runs unbounded.
    """
    if answer is None or isinstance(answer, bool):
        return None
    timeout = _signal_timeout(timeout_seconds)
    gold_text = str(answer)
    if "####" in gold_text:  # a GSM8K rationale: its answer follows the last `####`
        gold_text = gold_text.rsplit("####", 1)[1]
    gold = _parse_gold(gold_text.strip(), timeout)
    if not gold:
        return None
    math_verify = _math_verify()
    predicted = math_verify.parse(completion_text(completion), parsing_timeout=timeout)
    if not predicted:
        return 0.0
    return 1.0 if math_verify.verify(list(gold), predicted, timeout_seconds=timeout) else 0.0


class MathMatchParams(BaseModel):
    """Params of `math_match`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("answer", min_length=1, description="Dataset column holding the gold answer (LaTeX such as "
                        "`\\frac{1}{2}` or `$\\{1,2\\}$`, a number, or a GSM8K rationale ending in `#### 72`).")
    timeout_seconds: int = Field(5, ge=1, le=60, description="Seconds math-verify may spend parsing one text or "
                                 "making one comparison before the completion scores 0 (main thread only: the "
                                 "timeout is `signal.alarm`).")
