"""Training budgets (`engine.max_time`, `engine.max_tokens`): parsing, counting and the stop decision.

A budgeted job stops at the first optimizer-step boundary at which a budget is reached: it saves a
checkpoint and its final model (exported as at a normal end), ends `complete`, says `stopped_by:
max_time | max_tokens` in its final metrics, logs why, and appends a `budget_reached` event
(`{budget, limit, used}`). A budget reached at the job's last step is no stop: the job ended anyway.

How the budgets count, over every run of the job (a resumed job does not get a fresh budget):

- **time** (`max_time`, seconds): the wall time of the training loop (from its first step to the last,
  evaluations and checkpoint saves included; model loading, data preparation and the final export not),
  summed over the job's runs up to the checkpoint a run resumed from (the time a preempted run spent past
  its last checkpoint is not counted: those steps are trained again). It is saved in each checkpoint:
  GLiNER2's `trainer_state.json` (`runtime_s`), the HF trainers' `felix_budget.json` (`train_time_s`).
- **tokens** (`max_tokens`): the job's `trained_tokens`: non-padding input tokens for decoder LLMs (SFT, DPO:
  chosen and rejected; GRPO: the tokens trained on), **training records (samples) for GLiNER2**; saved
  in the checkpoint the same way (`records_seen`, `trained_tokens`).

In a distributed run every rank calls `BudgetCheck.check` at the same steps and the ranks agree (the max of
their codes, through `RunControl.all_max`), so all stop at the same step. Pure Python: no torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from felix_train.events import EventType
from felix_train.jobs import atomic_write_json

BUDGET_STATE_FILE = "felix_budget.json"
"""In an HF checkpoint folder: `{train_time_s, trained_tokens}` of the job up to that checkpoint."""

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> float | None:
    """`engine.max_time` in seconds from a number (seconds) or a string `"90"`, `"90s"`, `"30m"`, `"2h"`, `"1d"`;
    None stays None.

    Raises:
        ValueError: not a number or such a string, or not above zero (the message says what was got).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"`max_time` must be seconds (a number) or a duration such as \"90s\", \"30m\", \"2h\"; "
                         f"got {value!r}")
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"`max_time` must be seconds (a number) or a duration such as \"90s\", \"30m\", \"2h\" "
                             f"(units s, m, h, d); got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"`max_time` must be above zero (a budget of no time trains nothing); got {value!r}")
    return seconds


Duration = Annotated[float | None, BeforeValidator(parse_duration), WithJsonSchema({
    "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?[smhd]?$"},
              {"type": "null"}], "examples": [30, "90s", "30m", "2h"]})]
"""`engine.max_time`: seconds, given as a number or a string with a unit (s, m, h, d); resolved to seconds."""


class Budget(str, Enum):
    """Which budget stopped a job: the value of `stopped_by` and of the event's `budget`."""

    MAX_TIME = "max_time"
    MAX_TOKENS = "max_tokens"


_ORDER = (Budget.MAX_TIME, Budget.MAX_TOKENS)  # code = index + 1; 0 = none


@dataclass(frozen=True)
class BudgetHit:
    """A budget reached: which, its limit and what was used (seconds or tokens/samples)."""

    budget: Budget
    limit: float
    used: float

    def event_data(self) -> dict[str, Any]:
        used = round(self.used, 3) if self.budget is Budget.MAX_TIME else int(self.used)
        return {"budget": self.budget.value, "limit": self.limit, "used": used}


class BudgetCheck:
    """The budgets of one job, checked at step boundaries.

    `max_time` in seconds, `max_tokens` in the trainer's token unit; `all_max` makes the ranks agree
    (`RunControl.all_max`; None in one process). `active` is False when the job has no budget (then
    `check` is never a collective and always None).
    """

    def __init__(self, max_time: float | None = None, max_tokens: int | None = None, *,
                 all_max: Callable[[int], int] | None = None):
        self.max_time = max_time
        self.max_tokens = max_tokens
        self.all_max = all_max

    @classmethod
    def of(cls, engine: Any, control: Any = None) -> BudgetCheck:
        """From a resolved spec's `engine` and the run's `RunControl` (for the ranks' agreement)."""
        return cls(engine.max_time, engine.max_tokens, all_max=getattr(control, "all_max", None))

    @property
    def active(self) -> bool:
        return self.max_time is not None or self.max_tokens is not None

    def reached(self, *, time_s: float, tokens: float) -> BudgetHit | None:
        """This process's answer: time first, then tokens; None while both are under their limits."""
        if self.max_time is not None and time_s >= self.max_time:
            return BudgetHit(Budget.MAX_TIME, self.max_time, time_s)
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return BudgetHit(Budget.MAX_TOKENS, self.max_tokens, tokens)
        return None

    def check(self, *, time_s: float, tokens: float) -> BudgetHit | None:
        """The budget every rank agrees is reached now, or None. Call on every rank at the same steps."""
        if not self.active:
            return None
        hit = self.reached(time_s=time_s, tokens=tokens)
        if self.all_max is None:
            return hit
        code = self.all_max(_ORDER.index(hit.budget) + 1 if hit else 0)
        if code == 0:
            return None
        budget = _ORDER[code - 1]
        if budget is Budget.MAX_TIME:
            return BudgetHit(budget, self.max_time, time_s)
        return BudgetHit(budget, self.max_tokens, tokens)

    def describe(self, *, unit: str = "tokens", time_s: float = 0.0, tokens: float = 0) -> str | None:
        """A log line naming the budgets and what earlier runs used (None without a budget)."""
        parts = []
        if self.max_time is not None:
            parts.append(f"max_time {self.max_time:g} s ({time_s:.1f} s used)")
        if self.max_tokens is not None:
            parts.append(f"max_tokens {self.max_tokens} {unit} ({int(tokens)} used)")
        return f"budget: {', '.join(parts)}; the job stops at the first step past one" if parts else None


def announce(reporter: Any, hit: BudgetHit, step: int, *, unit: str = "tokens") -> None:
    """Say in train.log and the event list that `hit` stops the job at `step` (main process only: the reporter's)."""
    what = f"{hit.used:.1f} s of {hit.limit:g} s" if hit.budget is Budget.MAX_TIME else \
        f"{int(hit.used)} of {int(hit.limit)} {unit}"
    reporter.log(f"budget {hit.budget.value} reached at step {step} ({what}): saving a checkpoint and the final "
                 "model; the job ends complete")
    reporter.event(EventType.BUDGET_REACHED, hit.event_data(), step=step)


def read_budget_state(folder: str | Path | None) -> dict[str, float]:
    """`{train_time_s, trained_tokens}` saved in a checkpoint folder (zeros when absent: an older checkpoint)."""
    state: dict[str, Any] = {}
    if folder is not None:
        try:
            state = json.loads((Path(folder) / BUDGET_STATE_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            state = {}
    return {"train_time_s": float(state.get("train_time_s") or 0.0),
            "trained_tokens": int(state.get("trained_tokens") or 0)}


def write_budget_state(folder: str | Path, *, train_time_s: float, trained_tokens: int) -> None:
    """Write `felix_budget.json` into a checkpoint folder before it is committed."""
    atomic_write_json(Path(folder) / BUDGET_STATE_FILE,
                      {"train_time_s": round(float(train_time_s), 3), "trained_tokens": int(trained_tokens)})
