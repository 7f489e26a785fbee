"""What a GLiNER2 checkpoint holds beyond the weights, and how a run resumes from it.

A checkpoint folder (`checkpoints/<uuid>/`, committed by the job's CheckpointManager) holds
`adapter/` (LoRA: PEFT adapter, holding any fully trained task heads too) or `model/` (full: a
gliner2 folder `GLiNER2.from_pretrained` loads), `training_state.pt` (optimizer, scheduler,
GradScaler, torch/CUDA RNG, and every rank's RNG in a distributed run; load with
`weights_only=True`) and `trainer_state.json` (step, epoch, next batch, the epoch's record order
and its seed, Python/NumPy RNG, running loss sums, the last eval, the early-stopping count). `restore` puts all of it back
and the loop skips the batches already seen, so a preempted run ends with the same weights as
an uninterrupted one (bit-exact on CPU).

Distributed: every rank calls `save_checkpoint` at the same steps; rank 0 alone writes, with
every rank's RNG gathered to it, then all meet at a barrier. A job resumes exactly on the same
number of processes, and on another one at the same place in the epoch order (`_rescale`:
rounded down to a whole batch), with as many steps as the remaining epochs then need.

`initial_weights` picks where a run's weights come from: this job's checkpoint (resume) wins
over a checkpoint UUID given as `base_model` (continue: its weights, a fresh optimizer, schedule
and data order), which wins over the catalog base.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from felix_train.catalog import TrainingType
from felix_train.errors import CheckpointNotFound, FelixError
from felix_train.jobs import atomic_write_json
from felix_train.trainers.context import TrainContext, barrier, distributed
from felix_train.trainers.gliner2.config import ADAPTER_DIR, MODEL_DIR, TRAINER_STATE, TRAINING_STATE


def _rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(state: dict, torch_state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state["torch_rng"])
    if torch.cuda.is_available() and torch_state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(torch_state["cuda_rng"])


@dataclass
class Position:
    """Where training stands: after `step` optimizer steps, next batch `batch` of epoch `epoch`."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0  # per-record loss sums over the whole run (train_loss)
    records_seen: int = 0
    runtime_s: float = 0.0  # training seconds before this process
    last_eval: dict = field(default_factory=dict)
    best_eval_f1: float | None = None  # early stopping: the best eval F1 so far
    evals_since_best: int = 0  # early stopping: evals in a row without a better eval F1
    stopped_by: str | None = None  # the budget (`max_time` | `max_tokens`) that ended this run; not saved


def save_checkpoint(trainer, pos: Position, metrics: dict) -> Any:
    """Every rank calls it, at the same steps; rank 0 writes and commits it, with every rank's RNG state.

    The other ranks return None once rank 0 has committed (a barrier), so that every rank then
    sees the same checkpoints.
    """
    ctx = trainer.ctx
    torch_rng = {"torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    ranks_rng = None
    if trainer.world > 1:  # each rank's collator draws from its own Python RNG, and dropout from its torch RNG
        ranks_rng = [None] * trainer.world
        distributed().all_gather_object(ranks_rng, {"rng": _rng_state(), **torch_rng})
    if not ctx.is_main_process:
        barrier()
        return None
    staged = ctx.checkpoints.stage()
    try:
        trainer.save_weights(staged)
        torch.save({
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            **torch_rng,
            "ranks_rng": ranks_rng,  # [rank] -> {"rng": Python/NumPy, "torch_rng", "cuda_rng"}; None in one process
        }, staged / TRAINING_STATE)
        state = {
            "step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
            "epoch_order": trainer.epoch_order(pos.epoch) if pos.batch else None,
            "data_seed": trainer.config.seed, "num_train_records": len(trainer.train_dataset),
            "total_steps": trainer.total_steps, "loss_sum": pos.loss_sum, "records_seen": pos.records_seen,
            "runtime_s": pos.runtime_s + (time.monotonic() - trainer._t0), "last_eval": pos.last_eval,
            "best_eval_f1": pos.best_eval_f1, "evals_since_best": pos.evals_since_best,
            "training_type": "lora" if trainer.config.use_lora else "full", "rng": _rng_state(),
            "world_size": trainer.world, "global_batch_size": trainer.global_batch_size,
        }
        atomic_write_json(staged / TRAINER_STATE, state)
        manifest = ctx.checkpoints.commit(staged, step=pos.step, epoch=trainer.epoch_float(pos), metrics=metrics)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise  # the other ranks wait at the barrier until the launcher ends them
    barrier()
    if manifest is not None:
        ctx.reporter.log(f"checkpoint {manifest.uuid} at step {pos.step} (epoch {trainer.epoch_float(pos):.2f})")
    return manifest


def restore(trainer, folder: Path) -> Position:
    """Load optimizer, scheduler, scaler, RNG and data position from a checkpoint of this job."""
    state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    if state.get("num_train_records") != len(trainer.train_dataset) or state.get("data_seed") != trainer.config.seed:
        raise FelixError(
            f"checkpoint {folder.name} was written for {state.get('num_train_records')} training records and seed "
            f"{state.get('data_seed')}, but this run has {len(trainer.train_dataset)} and seed {trainer.config.seed}; "
            "the datasets changed since the job started. Start a new job (a checkpoint UUID as base_model "
            "continues from its weights)."
        )
    if state.get("batch") and state.get("epoch_order"):
        order = state["epoch_order"]
        n = len(trainer.train_dataset)
        if len(order) != trainer.epoch_size or len(set(order)) != len(order) or not all(0 <= i < n for i in order):
            raise FelixError(f"checkpoint {folder.name}: its epoch order is not {trainer.epoch_size} distinct records "
                             f"of this run's {n} training records; start a new job")
        trainer._order_override[state["epoch"]] = order  # the rest of that epoch as it was begun
    torch_state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
    trainer.optimizer.load_state_dict(torch_state["optimizer"])
    trainer.scheduler.load_state_dict(torch_state["scheduler"])
    trainer.scaler.load_state_dict(torch_state["scaler"])
    rng = state["rng"]
    ranks_rng = torch_state.get("ranks_rng")
    if ranks_rng and trainer.rank < len(ranks_rng):  # this rank's own (rank 0's for a rank the writer lacked)
        rng, torch_state = ranks_rng[trainer.rank]["rng"], {**torch_state, **ranks_rng[trainer.rank]}
    _set_rng_state(rng, torch_state)
    pos = Position(step=state["step"], epoch=state["epoch"], batch=state["batch"], loss_sum=state["loss_sum"],
                   records_seen=state["records_seen"], runtime_s=state["runtime_s"],
                   last_eval=state.get("last_eval") or {}, best_eval_f1=state.get("best_eval_f1"),
                   evals_since_best=state.get("evals_since_best", 0))
    saved_global = state.get("global_batch_size", trainer.config.batch_size)
    if saved_global != trainer.global_batch_size:
        _rescale(trainer, pos, state, saved_global)
    return pos


def _rescale(trainer, pos: Position, state: dict, saved_global: int) -> None:
    """Resume a checkpoint written with another global batch (another number of processes or batch size).

    The position in the epoch's order is kept, rounded down to a whole batch (a few records may
    be seen twice); without `engine.max_steps` the remaining epochs take as many steps as they now
    need, and the LR schedule is rebuilt over the new total (its step count carries on), as HF does.
    """
    old_batch = pos.batch
    pos.batch = pos.batch * saved_global // trainer.global_batch_size
    if trainer.config.max_steps <= 0:
        left_in_epoch = math.ceil((trainer.batches_per_epoch - pos.batch) / trainer.config.gradient_accumulation_steps)
        trainer._total_steps = pos.step + left_in_epoch + (trainer.config.num_epochs - pos.epoch - 1) * trainer.steps_per_epoch
        scheduler_state = trainer.scheduler.state_dict()
        trainer._setup_scheduler()
        trainer.scheduler.load_state_dict(scheduler_state)
    trainer.ctx.reporter.log(
        f"resuming on {trainer.world} process(es) a checkpoint written by {state.get('world_size', 1)}: "
        f"batch {old_batch} of {saved_global} records is batch {pos.batch} of {trainer.global_batch_size} "
        f"in epoch {pos.epoch}; {trainer.total_steps} steps in all (was {state.get('total_steps')})", level="WARN")


def initial_weights(ctx: TrainContext) -> tuple[Path, Path | None, str]:
    """(folder to load the GLiNER2 model from, adapter folder or None, a description) for this run.

    Resume (this job's checkpoint) wins over continue (a checkpoint UUID as base_model),
    which wins over the catalog base.
    """
    lora = ctx.spec.training_type == TrainingType.LORA
    source = None
    if ctx.resume_from is not None:
        source, what = ctx.checkpoints.path(ctx.resume_from), f"resumed checkpoint {ctx.resume_from.uuid}"
    elif ctx.model.init_checkpoint is not None:
        uuid = ctx.model.init_manifest.uuid if ctx.model.init_manifest else Path(ctx.model.init_checkpoint).name
        source, what = Path(ctx.model.init_checkpoint), f"checkpoint {uuid}"
    if source is None:
        return ctx.model.path, None, f"base {ctx.model.entry.id}"
    want = source / (ADAPTER_DIR if lora else MODEL_DIR)
    if not want.is_dir():
        raise CheckpointNotFound(
            f"{what} at {source} has no `{want.name}/` folder; it was not written by a GLiNER2 "
            f"{ctx.spec.training_type.value} run. Use a checkpoint of a `training_type: "
            f"{ctx.spec.training_type.value}` GLiNER2 job.")
    if lora:
        return ctx.model.path, want, what
    return want, None, what
