"""The bridge between a Hugging Face / TRL trainer and a felix job: one callback, shared by SFT, DPO and GRPO.

A TRL trainer runs the loop; felix hooks it (`FelixCallback`), never forks it:

- progress (`on_step_end`)            → `ctx.reporter.progress` (status.json, ETA, tokens/s and MFU)
- throughput (`on_step_begin/end`)    → `tokens_per_s`, `achieved_tflops`, `mfu` per logged step (`lm_perf`)
- precision                           → `hf_args.job_precision` (`perf.precision.choose_precision`): TrainingArguments'
                                        bf16/fp16 and the base model's dtype (`lm_common.model_load_kwargs`)
- logs (`on_log`)                     → `ctx.reporter.log_metrics` (metrics.jsonl) + a train.log line
- trackers (`engine.report_to`)       → TrainingArguments' own integrations: `report_to` (W&B, MLflow) and HF's
                                        `TensorBoardCallback` into the job's `tensorboard/` (`hf_args.tracker_callbacks`)
- stop / preemption (`on_step_end`)   → `ctx.control.check()`; on a reason: save, then stop, remembering why
- budgets (`on_step_end`)             → `engine.max_time` / `max_tokens` (`felix_train.budgets`): save, then end
                                        training normally (the trainer exports and reports `complete`, with
                                        `stopped_by`); time and tokens used so far travel in each checkpoint's
                                        `felix_budget.json`, so a resumed job keeps counting
- checkpoints (`on_save`)             → HF's `checkpoint-N` folder is committed by `ctx.checkpoints.commit`,
                                        which renames it to `checkpoints/<uuid>/` (HF keeps no checkpoints itself:
                                        `save_total_limit=None`, retention is the manager's)
- resume                              → `trainer.train(resume_from_checkpoint=checkpoints/<uuid>)`: HF restores
                                        weights, optimizer, scheduler, RNG and data position, so a resumed run's
                                        losses equal the uninterrupted run's bit for bit on CPU.
- distributed runs (DDP, FSDP, DeepSpeed)  → HF/accelerate shard the data and sync gradients; `ctx.control.check()`
                                        all-reduces the ranks' stop codes, so every rank stops at the same step and
                                        joins the same save; `on_save` waits for every rank's files, then rank 0
                                        commits; the reporter writes on rank 0 only.

Typical use in a trainer module:

    args = training_arguments(ctx, SFTConfig, has_eval=eval_ds is not None, max_length=...)
    callback = FelixCallback(ctx)
    trainer = SFTTrainer(model=..., args=args, ..., callbacks=[callback, *tracker_callbacks(ctx)])
    output = train(trainer, ctx, callback)
    if callback.stop_reason is not None:
        return TrainResult(outcome=callback.outcome(), last_checkpoint=callback.last_checkpoint)

The TrainingArguments it works with come from `hf_args` (re-exported here). Imports transformers at module
import: load this module only inside a trainer's `run()`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from felix_train.budgets import BudgetCheck, BudgetHit, announce, read_budget_state, write_budget_state
from felix_train.checkpoints import CheckpointManifest
from felix_train.perf.mfu import Throughput
from felix_train.trainers.context import Outcome, StopReason, TrainContext, barrier
from felix_train.trainers.hf_args import (  # noqa: F401 - re-exported: the trainers' one import of the HF bridge
    HF_OUTPUT_DIRNAME, attn_implementation, bf16_supported, device_info, gpu_defaults, hf_output_dir, job_precision,
    precision_flags, report_to, tracker_callbacks, training_arguments, training_kwargs,
)

_LOG_KEYS_FIRST = ("loss", "eval_loss", "grad_norm", "learning_rate", "mean_token_accuracy",
                   "eval_mean_token_accuracy", "reward", "rewards/accuracies")
_LOG_KEYS_HIDDEN = ("train_runtime", "train_tokens_per_second", "num_tokens", "eval_num_tokens")
"""Per-step keys left out of the train.log line (HF's running speed figures; metrics.jsonl keeps them)."""


# -- the callback --------------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def _known(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures that are not None (an unknown peak leaves `mfu` out rather than logging null)."""
    return {k: v for k, v in figures.items() if v is not None}


def format_log_line(step: int, max_steps: int, logs: dict[str, Any]) -> str:
    """One train.log line: `step 10/40 epoch 0.50 loss 2.3456 lr 1.000e-03 ...` (the main keys first)."""
    hidden = _LOG_KEYS_HIDDEN if "train_loss" not in logs else ()
    keys = [k for k in _LOG_KEYS_FIRST if k in logs] + sorted(
        k for k in logs if k not in _LOG_KEYS_FIRST and k not in hidden)
    parts = [f"step {step}/{max_steps}"]
    if isinstance(logs.get("epoch"), (int, float)):
        parts.append(f"epoch {logs['epoch']:.2f}")
    parts += [f"{k} {_fmt(logs[k])}" for k in keys if k != "epoch"]
    return " ".join(parts)


class FelixCallback(TrainerCallback):
    """Reports progress and metrics, turns stop/preemption into a checkpoint, commits HF checkpoints.

    After `trainer.train()` returns:
        stop_reason (`StopReason` or None): why training stopped early (None: it ran to the end).
        last_checkpoint (`CheckpointManifest` or None): the last checkpoint committed by this process.
        eval_metrics (`dict`): the last evaluation's metrics (`eval_*` keys), `eval_step` its step.
        train_logs (`dict`): the last training log (loss, learning_rate, ...).
        tokens_per_s (`float` or None): non-padding input tokens per second in this process's run.

    Throughput (issue 18): with a `throughput` (`perf.mfu.Throughput`, set by `lm_perf.setup_throughput`), every
    training log also carries `tokens_per_s`, `achieved_tflops` and `mfu` for the steps since the previous log:
    real tokens (TRL/HF's non-padding count, `state.num_input_tokens_seen`, or `token_count(state)` when a trainer
    counts its own) over the time from `on_step_begin` to `on_step_end` (evaluation, saving and logging left out).
    The last figures go to status.json's progress too.
    """

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx
        self.stop_reason: StopReason | None = None
        self.last_checkpoint: CheckpointManifest | None = None
        self.last_saved_step: int | None = None
        self.eval_metrics: dict[str, Any] = {}
        self.eval_step: int | None = None
        self.train_logs: dict[str, Any] = {}
        self.tokens_per_s: float | None = None
        self._t0: float | None = None
        self._tokens0 = 0
        self.throughput: Throughput | None = None
        self.perf_info: dict[str, Any] = {}
        self.token_count: Callable[[TrainerState], int] | None = None
        self.step_figures: dict[str, Any] = {}
        self._step_t0: float | None = None
        self._seen = 0
        self._window_tokens = 0
        self._window_s = 0.0
        self.budget = BudgetCheck.of(ctx.spec.engine, ctx.control)
        self.budget_hit: BudgetHit | None = None  # the budget that ended training (the job still completes)
        prior = read_budget_state(ctx.checkpoints.path(ctx.resume_from) if ctx.resume_from is not None else None)
        self._prior_time, self._prior_tokens = prior["train_time_s"], prior["trained_tokens"]
        self._budget_t0: float | None = None
        self._budget_tokens0 = 0

    def used_time(self) -> float:
        """Training seconds of the job: earlier runs (up to the resumed checkpoint) and this one."""
        return self._prior_time + (time.monotonic() - self._budget_t0 if self._budget_t0 is not None else 0.0)

    def trained_tokens(self, state: TrainerState) -> int:
        """Tokens the job has trained on (every run): `trained_tokens`, what `engine.max_tokens` counts."""
        return self._prior_tokens + self._tokens(state) - self._budget_tokens0

    def budget_metrics(self, state: TrainerState) -> dict[str, Any]:
        """`trained_tokens` and, when a budget ended training, `stopped_by` for the final metrics."""
        out: dict[str, Any] = {"trained_tokens": self.trained_tokens(state)}
        if self.budget_hit is not None:
            out["stopped_by"] = self.budget_hit.budget.value
        return out

    def _tokens(self, state: TrainerState) -> int:
        return int(self.token_count(state) if self.token_count is not None else state.num_input_tokens_seen or 0)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._t0 = time.monotonic()
        self._tokens0 = int(state.num_input_tokens_seen or 0)
        self._seen = self._tokens(state)
        self._budget_t0, self._budget_tokens0 = time.monotonic(), self._seen
        if self.budget.active:
            self.ctx.reporter.log(self.budget.describe(time_s=self._prior_time, tokens=self._prior_tokens))
        self.ctx.reporter.start_clock(state.global_step)
        self.ctx.reporter.progress(state.global_step, state.max_steps, state.epoch, force=True,
                                   trained_tokens=self.trained_tokens(state))

    def on_step_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._step_t0 = time.perf_counter()

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        if self._step_t0 is not None:
            self._window_s += time.perf_counter() - self._step_t0
            self._step_t0 = None
            seen = self._tokens(state)
            self._window_tokens += seen - self._seen
            self._seen = seen
        self.ctx.reporter.progress(state.global_step, state.max_steps, state.epoch,
                                   trained_tokens=self.trained_tokens(state), **self.step_figures)
        if state.global_step >= state.max_steps:
            control.should_log = True  # the last steps' loss is never left unlogged
        reason = self.ctx.control.check()
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
            what = "stop requested" if reason == StopReason.STOP else "interrupted (preemption)"
            self.ctx.reporter.log(f"{what} at step {state.global_step}: saving a checkpoint, then stopping")
            control.should_log = True
            control.should_save = True
            control.should_evaluate = False
            control.should_training_stop = True
        elif self.stop_reason is None and self.budget_hit is None and state.global_step < state.max_steps:
            self.budget_hit = self.budget.check(time_s=self.used_time(), tokens=self.trained_tokens(state))
            if self.budget_hit is not None:  # the last step: saved, then the trainer evaluates and exports as usual
                announce(self.ctx.reporter, self.budget_hit, state.global_step)
                control.should_log = True
                control.should_save = True
                control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        # never evaluate or save the same step twice (a stop mid-epoch, or the last step, already did)
        if self.stop_reason is not None or self.eval_step == state.global_step:
            control.should_evaluate = False
        if self.stop_reason is not None or self.last_saved_step == state.global_step:
            control.should_save = False
        return control

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        if self._t0 is not None:
            elapsed = time.monotonic() - self._t0
            tokens = int(state.num_input_tokens_seen or 0) - self._tokens0
            self.tokens_per_s = tokens / elapsed if elapsed > 0 else None
        if self.throughput is not None and self.throughput.steps:
            self.step_figures = _known(self.throughput.summary())
        self.ctx.reporter.progress(state.global_step, state.max_steps, state.epoch, force=True,
                                   trained_tokens=self.trained_tokens(state), **self.step_figures)

    # -- logs --------------------------------------------------------------------------------------------
    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        logs = dict(logs or {})
        if any(k.startswith("eval_") for k in logs):
            self.eval_metrics = {k: v for k, v in logs.items() if k.startswith("eval_")}
            self.eval_step = state.global_step
        elif "loss" in logs:
            logs.update(self._window_figures())
            self.train_logs = logs
        epoch = logs.pop("epoch", state.epoch)
        self.ctx.reporter.log_metrics(state.global_step, logs, epoch=epoch)
        self.ctx.reporter.log(format_log_line(state.global_step, state.max_steps, {"epoch": epoch, **logs}))

    def _window_figures(self) -> dict[str, Any]:
        """tokens/s, achieved TFLOP/s and MFU of the steps since the previous training log (then a new window)."""
        if self.throughput is None or self._window_s <= 0:
            return {}
        self.step_figures = _known(self.throughput.step(self._window_tokens, self._window_s))
        self._window_tokens, self._window_s = 0, 0.0
        return self.step_figures

    # -- checkpoints -------------------------------------------------------------------------------------
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        barrier()  # every rank has written its files (rng_state_<rank>.pth) before the folder moves
        self.last_saved_step = state.global_step
        if not (self.ctx.is_main_process and state.is_world_process_zero):
            return
        metrics: dict[str, Any] = {}
        if "loss" in self.train_logs:
            metrics["loss"] = self.train_logs["loss"]
        best = self.ctx.checkpoints.best_metric  # a training metric (GRPO's `reward`) must reach the manifest too
        if best and not best.startswith("eval_") and best in self.train_logs:
            metrics[best] = self.train_logs[best]
        if self.eval_step == state.global_step:
            metrics.update(self.eval_metrics)
        write_budget_state(folder, train_time_s=self.used_time(), trained_tokens=self.trained_tokens(state))
        manifest = self.ctx.checkpoints.commit(folder, step=state.global_step, epoch=state.epoch, metrics=metrics)
        if manifest is not None:
            self.last_checkpoint = manifest
            self.ctx.reporter.log(f"checkpoint {manifest.uuid} saved at step {manifest.step}"
                                  + (f" (eval_loss {_fmt(metrics['eval_loss'])})" if "eval_loss" in metrics else ""))

    def outcome(self) -> Outcome:
        if self.stop_reason == StopReason.STOP:
            return Outcome.STOPPED
        if self.stop_reason == StopReason.PREEMPT:
            return Outcome.PREEMPTED
        return Outcome.COMPLETE


# -- running -------------------------------------------------------------------------------------------------

def resume_path(ctx: TrainContext) -> str | None:
    """The checkpoint folder to resume this job from (its last checkpoint), or None for a fresh start."""
    if ctx.resume_from is None:
        return None
    return str(ctx.checkpoints.path(ctx.resume_from))


def train(trainer, ctx: TrainContext, callback: FelixCallback):
    """`trainer.train()`, resuming exactly from `ctx.resume_from` when set. Returns HF's TrainOutput."""
    path = resume_path(ctx)
    if path is not None:
        ctx.reporter.log(f"resuming training at step {ctx.resume_from.step} from checkpoint {ctx.resume_from.uuid}")
    return trainer.train(resume_from_checkpoint=path)


def run_train_loss(ctx: TrainContext, final_step: int) -> float | None:
    """Mean training loss over the whole job (every attempt), from metrics.jsonl.

    HF's `train_loss` covers only the steps run by this process; a resumed job's earlier steps
    are in metrics.jsonl. Each logged `loss` averages the steps since the previous log; a step
    logged twice (a preempted attempt ran past its last checkpoint) counts once, its last value.
    """
    by_step: dict[int, float] = {}
    for row in ctx.reporter.read_metrics():
        loss, step = row.get("loss"), row.get("step")
        if isinstance(loss, (int, float)) and isinstance(step, int) and 0 < step <= final_step and math.isfinite(loss):
            by_step[step] = float(loss)
    if not by_step:
        return None
    total, prev = 0.0, 0
    for step in sorted(by_step):
        total += by_step[step] * (step - prev)
        prev = step
    return total / prev
