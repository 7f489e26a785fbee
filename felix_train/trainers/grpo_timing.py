"""Where a GRPO step's time goes: generation, rewards, the training passes; and a warning when groups teach nothing.

GRPO spends a step generating completions, scoring them, then training on them; the split tells a user which
to speed up (issue 18, item 5). Hooked into TRL 1.16's `GRPOTrainer` with the least reach into it:

- `TimedGRPOTrainer._generate_single_turn`: each generation call, timed, and its completion tokens counted
  (the one call every backend goes through: transformers `generate`, continuous batching, vLLM);
- `timed_rewards(funcs, split)`: every reward function wrapped, keeping its `__name__` (TRL names its
  `rewards/<name>/mean` metrics by it);
- `TimeSplit.on_step_begin/on_step_end` (a `TrainerCallback`): the optimizer step's wall time; training is the
  rest (the log-prob passes, loss, backward and optimizer step);
- `TimedGRPOTrainer._prepare_inputs`: the tokens each micro-batch trains on (prompt + completion masks), for
  `FelixCallback`'s tokens/s and MFU (TRL's own count is taken once per generation batch).

Per logged step (`TimedGRPOTrainer.log`, training logs only): `generation_s`, `reward_s`, `training_s` (seconds
since the previous log) and `generation_tokens_per_s`; in the final metrics the same over the run plus
`generated_tokens` (`TimeSplit.totals`). Evaluation's generation is not counted.

`ZeroStdWatch` logs a warning when TRL's `frac_reward_zero_std` (the groups whose completions all got the same
reward: no advantage, no gradient) stays above `ZERO_STD_FRACTION` for `ZERO_STD_LOGS` logged steps in a row.

Imports TRL at module import: load it only inside the GRPO trainer's `run()`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback
from trl import GRPOTrainer

from felix_train.trainers.context import TrainContext

ZERO_STD_FRACTION = 0.8
ZERO_STD_LOGS = 5


@dataclass
class _Times:
    generation_s: float = 0.0
    reward_s: float = 0.0
    step_s: float = 0.0
    generated_tokens: int = 0

    def figures(self) -> dict[str, Any]:
        training = max(0.0, self.step_s - self.generation_s - self.reward_s)
        out: dict[str, Any] = {"generation_s": round(self.generation_s, 4), "reward_s": round(self.reward_s, 4),
                               "training_s": round(training, 4)}
        if self.generation_s > 0:
            out["generation_tokens_per_s"] = round(self.generated_tokens / self.generation_s, 2)
        return out


@dataclass
class TimeSplit(TrainerCallback):
    """Generation, reward and step seconds (and generated tokens) per logging window and over the run."""

    window: _Times = field(default_factory=_Times)
    total: _Times = field(default_factory=_Times)
    _step_t0: float | None = None

    def add(self, **amounts: float) -> None:
        for times in (self.window, self.total):
            for name, value in amounts.items():
                setattr(times, name, getattr(times, name) + value)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_t0 is not None:
            self.add(step_s=time.perf_counter() - self._step_t0)
            self._step_t0 = None

    def take_window(self) -> dict[str, Any]:
        """The window's figures (empty when no step ran in it), then a new window."""
        if self.window.step_s <= 0:
            return {}
        figures, self.window = self.window.figures(), _Times()
        return figures

    def totals(self) -> dict[str, Any]:
        """The run's figures for the final metrics (this process's steps)."""
        if self.total.step_s <= 0:
            return {}
        return {**self.total.figures(), "generated_tokens": self.total.generated_tokens}


def timed_rewards(funcs: list, split: TimeSplit) -> list:
    """`funcs` with each plain function wrapped to add its time to `split` (models and async functions as they are)."""
    import inspect

    def wrap(func):
        if not callable(func) or inspect.iscoroutinefunction(func) or not hasattr(func, "__name__"):
            return func

        @functools.wraps(func)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                split.add(reward_s=time.perf_counter() - t0)

        return timed

    return [wrap(f) for f in funcs]


class TimedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer that times its generation and counts the tokens it trains on (see the module docstring)."""

    time_split: TimeSplit
    trained_tokens: int = 0

    def _generate_single_turn(self, *args, **kwargs):
        if not self.model.training:
            return super()._generate_single_turn(*args, **kwargs)
        t0 = time.perf_counter()
        out = super()._generate_single_turn(*args, **kwargs)
        self.time_split.add(generation_s=time.perf_counter() - t0,
                            generated_tokens=sum(len(ids) for ids in out[0]))
        return out

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training and "completion_mask" in inputs:
            self.trained_tokens += int(inputs["prompt_mask"].sum()) + int(inputs["completion_mask"].sum())
        return inputs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            logs.update(self.time_split.take_window())
        super().log(logs, start_time)


class ZeroStdWatch(TrainerCallback):
    """A warning in the job log when most groups give no gradient for several logged steps in a row."""

    def __init__(self, ctx: TrainContext, *, fraction: float = ZERO_STD_FRACTION, logs: int = ZERO_STD_LOGS):
        self.ctx, self.fraction, self.logs = ctx, fraction, logs
        self.streak = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        value = (logs or {}).get("frac_reward_zero_std")
        if not isinstance(value, (int, float)):
            return
        self.streak = self.streak + 1 if value > self.fraction else 0
        if self.streak == self.logs:
            self.ctx.reporter.warn(
                "grpo_zero_std",
                f"frac_reward_zero_std above {self.fraction:g} for {self.logs} logged steps in a row (step "
                f"{state.global_step}): in most groups every completion gets the same reward, so they give no "
                "gradient; raise `num_generations` or `temperature`, or use rewards that tell completions apart "
                "(partial credit), or easier prompts", step=state.global_step, frac_reward_zero_std=value)
