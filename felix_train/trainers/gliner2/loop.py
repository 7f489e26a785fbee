"""The GLiNER2 training loop: micro-batches, accumulation, logging, the eval and save cadence, stop and preempt.

`fit(trainer, pos)` trains from `pos` (a fresh `Position`, or one `state.restore` returned) to the
last step. gliner2's `ExtractorTrainer` supplies the pieces of a step: `_backward_one` (autocast,
non-finite guarding), `_renormalize_partial_accumulation`, `_optimizer_step` (clipping, step,
zero_grad); this loop walks the epoch order (`FelixGLiNER2Trainer.epoch_order`), resuming at
`pos.batch`, and adds per-step progress and metrics through the job's reporter.

Cadence: a log line every `engine.logging_steps`, eval every `engine.eval.steps` or each epoch,
a checkpoint every `engine.save_steps` or each epoch, and both at the last step. With
`engine.early_stopping_patience` an eval with a better eval F1 than any before is checkpointed
too (so the best weights are there for `export.finish` to take), and training ends, complete,
after that many evals in a row without a better one. Once per
optimizer step every rank polls `ctx.control`: on a stop request or a preemption signal it
checkpoints (if this step has none yet) and returns `Outcome.STOPPED` / `Outcome.PREEMPTED`.

Budgets (`felix_train.budgets`): after each optimizer step short of the last, `engine.max_time` (the loop's
time over every run: `Position.runtime_s`, saved in the checkpoint) and `engine.max_tokens` (samples:
`Position.records_seen`) are checked; a budget reached makes this step the last one (logged, evaluated,
checkpointed, then exported by `export.finish`, `stopped_by` in the metrics) and a `budget_reached` event.
Progress carries `trained_tokens` (samples) and `samples_per_s`, `achieved_tflops`, `mfu` (`gliner2/perf.py`).

Losses are reported per record (gliner2 sums its loss over a batch; felix divides by the
records in the window so train and eval losses compare across batch sizes). Distributed: each
rank takes its slice of every global batch; a short last batch can leave a rank with no record,
and it then runs a stand-in batch whose loss counts for nothing (DDP needs every rank's backward).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from felix_train.budgets import BudgetCheck, announce
from felix_train.errors import FelixError
from felix_train.trainers.context import Outcome, StopReason
from felix_train.trainers.gliner2.eval import evaluate
from felix_train.trainers.gliner2.perf import setup_throughput
from felix_train.trainers.gliner2.state import Position, save_checkpoint


def fit(trainer, pos: Position, *, resumed_from: str | None = None) -> tuple[Outcome, Position, Any]:
    """Train from `pos` to the end, or until a stop/preempt request; checkpoints along the way."""
    ctx, cfg, spec = trainer.ctx, trainer.config, trainer.ctx.spec
    reporter = ctx.reporter
    total = trainer.total_steps
    nb = trainer.batches_per_epoch
    accum = cfg.gradient_accumulation_steps
    eval_steps = spec.engine.eval.steps
    patience = spec.engine.early_stopping_patience if trainer.data.eval else None
    save_steps = spec.engine.save_steps
    use_amp = cfg.fp16 or cfg.bf16
    amp_dtype = torch.bfloat16 if cfg.bf16 else torch.float16
    last_manifest = None
    saved_step = pos.step if resumed_from else -1
    window_loss, window_records = 0.0, 0
    budget = BudgetCheck.of(spec.engine, ctx.control)  # max_time / max_tokens (samples), over every run of the job
    if budget.active:
        reporter.log(budget.describe(unit="samples", time_s=pos.runtime_s, tokens=pos.records_seen))
    throughput = setup_throughput(trainer)
    figures: dict[str, Any] = {}  # samples_per_s, achieved_tflops, mfu of the steps so far (progress)

    trainer._t0 = time.monotonic()
    reporter.start_clock(pos.step)
    reporter.progress(pos.step, total, trainer.epoch_float(pos), force=True, trained_tokens=int(pos.records_seen))
    trainer.model.train()
    trainer.processor.change_mode(is_training=True)
    bar = tqdm(total=total, initial=pos.step, desc=f"train {ctx.job.id}", file=sys.stderr,
               disable=not ctx.is_main_process, dynamic_ncols=True)
    try:
        stop_early = False
        while pos.step < total and not stop_early:  # total_steps ends the last epoch (or is engine.max_steps)
            order = trainer.epoch_order(pos.epoch)
            micro, step_loss, step_records, step_tokens = 0, 0.0, 0, 0
            while pos.batch < nb and pos.step < total:
                if micro == 0:
                    step_t0 = time.perf_counter()
                chunk = order[pos.batch * trainer.global_batch_size:(pos.batch + 1) * trainer.global_batch_size]
                idx = chunk[trainer.rank * cfg.batch_size:(trainer.rank + 1) * cfg.batch_size]  # this rank's slice
                real = len(idx)
                # a short last batch can leave this rank no record: it runs one of the batch with its loss
                # times 0 (DDP needs every rank's backward), counted nowhere
                trainer._zero_loss_now = not real
                batch = trainer.train_collator([trainer.train_item(i, pos.epoch) for i in idx or chunk[:1]])
                pos.batch += 1
                last_in_epoch = pos.batch == nb
                try:
                    loss = trainer._backward_one(batch, pos.batch, use_amp, amp_dtype,
                                              is_last_micro=(micro + 1) % accum == 0 or last_in_epoch)
                finally:
                    trainer._zero_loss_now = False
                micro += 1
                if real:
                    step_loss += float(loss.detach().float().cpu())
                step_records += real
                if real and getattr(batch, "attention_mask", None) is not None:
                    step_tokens += int(batch.attention_mask.sum())  # encoder tokens (MFU), padding left out
                if micro < accum and not last_in_epoch:
                    continue
                if micro < accum:
                    trainer._renormalize_partial_accumulation(micro)
                trainer._optimizer_step()
                micro = 0
                pos.step += 1
                step_s = time.perf_counter() - step_t0
                step_loss, step_records, step_tokens = trainer._global_sum(step_loss, step_records, step_tokens)
                pos.loss_sum += step_loss
                pos.records_seen += step_records
                window_loss += step_loss
                window_records += step_records
                throughput.step(step_records, step_tokens, step_s)
                figures = throughput.summary()
                step_loss, step_records, step_tokens = 0.0, 0, 0
                if last_in_epoch:
                    pos.epoch, pos.batch = pos.epoch + 1, 0
                epoch_f = trainer.epoch_float(pos)
                bar.update(1)
                hit = budget.check(time_s=pos.runtime_s + time.monotonic() - trainer._t0,
                                   tokens=pos.records_seen) if pos.step < total else None
                reporter.progress(pos.step, total, epoch_f, force=pos.step == total or hit is not None,
                                  trained_tokens=int(pos.records_seen), **figures)
                if hit is not None:  # a budget ends the job here: logged, evaluated, saved and exported as a last step
                    announce(reporter, hit, pos.step, unit="samples")
                    pos.stopped_by = hit.budget.value

                step_metrics: dict[str, Any] = {}
                if pos.step % spec.engine.logging_steps == 0 or pos.step == total or hit is not None:
                    _flush_nonfinite(trainer)
                    step_metrics = _log_step(trainer, pos, epoch_f, window_loss / max(window_records, 1), bar)
                    window_loss, window_records = 0.0, 0
                eval_now = bool(trainer.data.eval) and (
                    (eval_steps and pos.step % eval_steps == 0)
                    or (not eval_steps and last_in_epoch) or pos.step == total or hit is not None)
                improved = stop_early = False
                if eval_now:
                    pos.last_eval = {"step": pos.step, **evaluate(trainer)}
                    _log_eval(trainer, pos, epoch_f, pos.last_eval, bar)
                    if patience:
                        improved, stop_early = _early_stopping(pos, patience)
                save_now = (save_steps and pos.step % save_steps == 0) or (not save_steps and last_in_epoch) \
                    or pos.step == total or improved or stop_early or hit is not None
                if save_now:
                    last_manifest = save_checkpoint(trainer, pos, _checkpoint_metrics(trainer, pos, step_metrics))
                    saved_step = pos.step
                if stop_early:
                    reporter.progress(pos.step, total, epoch_f, force=True)
                    reporter.log(f"early stopping at step {pos.step}: eval F1 {pos.last_eval.get('eval_f1', 0):.4f}, "
                                 f"no better than {pos.best_eval_f1:.4f} for {pos.evals_since_best} eval(s) "
                                 f"(engine.early_stopping_patience={patience})")
                if pos.step >= total or stop_early or hit is not None:
                    stop_early = stop_early or hit is not None
                    break
                reason = ctx.control.check()
                if reason is not None:
                    if saved_step != pos.step:
                        last_manifest = save_checkpoint(trainer, pos, _checkpoint_metrics(trainer, pos, step_metrics))
                        saved_step = pos.step
                    reporter.progress(pos.step, total, epoch_f, force=True,  # status.json: where it stopped
                                      trained_tokens=int(pos.records_seen), **figures)
                    word = "stop requested" if reason == StopReason.STOP else "preempted (signal)"
                    reporter.log(f"{word} at step {pos.step}: checkpoint {getattr(last_manifest, 'uuid', None)}")
                    return (Outcome.STOPPED if reason == StopReason.STOP else Outcome.PREEMPTED), pos, last_manifest
                if last_in_epoch:
                    break  # the next epoch has its own order
    finally:
        bar.close()
        pos.runtime_s += time.monotonic() - trainer._t0
    return Outcome.COMPLETE, pos, last_manifest


def _early_stopping(pos: Position, patience: int) -> tuple[bool, bool]:
    """(this eval is the best so far, training should stop) after an eval, counting evals without a better F1."""
    f1 = pos.last_eval.get("eval_f1")
    if f1 is None:
        return False, False
    if pos.best_eval_f1 is None or f1 > pos.best_eval_f1:
        pos.best_eval_f1, pos.evals_since_best = f1, 0
        return True, False
    pos.evals_since_best += 1
    return False, pos.evals_since_best >= patience


def _flush_nonfinite(trainer) -> None:
    try:
        trainer._flush_delayed_counters()
    except FloatingPointError as err:
        raise FelixError(f"training diverged: {err} (loss is NaN/inf). Lower `learning_rate` "
                         f"(now {trainer.ctx.spec.learning_rate}) or raise `engine.warmup_ratio`.") from err


def _log_step(trainer, pos: Position, epoch_f: float, loss: float, bar) -> dict:
    lrs = trainer.scheduler.get_last_lr()
    grad = trainer._last_grad_norm
    metrics = {"loss": loss, "learning_rate": lrs[-1],
               "grad_norm": float(grad) if grad is not None else None}
    if len(lrs) > 1:
        metrics["encoder_learning_rate"] = lrs[0]
    trainer.ctx.reporter.log_metrics(pos.step, metrics, epoch=epoch_f)
    trainer.ctx.reporter.log(f"step {pos.step}/{trainer.total_steps} epoch {epoch_f:.2f} loss {loss:.4f} "
                             f"lr {lrs[-1]:.3g} grad_norm {metrics['grad_norm'] or 0:.3f}")
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[-1]:.2e}")
    return metrics


def _log_eval(trainer, pos: Position, epoch_f: float, metrics: dict, bar) -> None:
    logged = {k: v for k, v in metrics.items() if k != "step"}
    trainer.ctx.reporter.log_metrics(pos.step, logged, epoch=epoch_f)
    per_label = ", ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in logged.items() if k.startswith("eval_f1/"))
    trainer.ctx.reporter.log(f"eval step {pos.step}: loss {logged.get('eval_loss', float('nan')):.4f} "
                             f"P {logged.get('eval_precision', 0):.3f} R {logged.get('eval_recall', 0):.3f} "
                             f"F1 {logged.get('eval_f1', 0):.3f}" + (f" ({per_label})" if per_label else ""))


def _checkpoint_metrics(trainer, pos: Position, step_metrics: dict) -> dict:
    metrics = {k: v for k, v in step_metrics.items() if v is not None}
    if pos.last_eval.get("step") == pos.step:
        metrics.update({k: v for k, v in pos.last_eval.items() if k != "step"})
    metrics["train_loss"] = pos.loss_sum / max(pos.records_seen, 1)
    return metrics
