"""What the runner hands a trainer, and what a trainer hands back.

Trainers know nothing of the store, HTTP or the CLI: they read the resolved spec,
the resolved model and data, write through the reporter and checkpoint manager, and
poll `control` once per optimizer step.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from felix_train.catalog import BaseModelEntry
from felix_train.checkpoints import CheckpointManager, CheckpointManifest
from felix_train.events import EventType
from felix_train.jobs import JobFolder
from felix_train.reporting import Reporter
from felix_train.spec import JobSpec


class StopReason(str, Enum):
    STOP = "stop"  # a user asked (STOP file): checkpoint, end `cancelled`, exit 4
    PREEMPT = "preempt"  # SIGTERM/SIGINT without a stop request: checkpoint, back to `requested`, exit 75


class Outcome(str, Enum):
    COMPLETE = "complete"
    STOPPED = "stopped"
    PREEMPTED = "preempted"


def distributed():
    """`torch.distributed` when this process is one rank of several in an initialised group, else None.

    Never imports torch: a run that has not loaded it (the runner's fake trainers, `validate`) is not distributed.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist if dist.get_world_size() > 1 else None


def barrier() -> None:
    """Wait for every rank (a no-op outside a distributed run)."""
    dist = distributed()
    if dist is not None:
        dist.barrier()


_STOP_CODES: dict[StopReason | None, int] = {None: 0, StopReason.PREEMPT: 1, StopReason.STOP: 2}
_STOP_REASONS = {code: reason for reason, code in _STOP_CODES.items()}


class RunControl:
    """Stop and preemption requests, polled by trainers at step boundaries.

    Every rank calls `check()` once per optimizer step (the HF bridge's `on_step_end`, the GLiNER2
    loop). In a distributed run `sync` all-reduces the ranks' local reasons (max of 0 none, 1 preempt,
    2 stop), so all ranks stop at the same step for the same reason, and save one checkpoint together:
    a SIGTERM that reached one rank only stops them all, and a stop request outranks a preemption.
    """

    def __init__(self, job: JobFolder, reporter: Reporter | None = None):
        self.job = job
        self.reporter = reporter  # tells a stop request once, as a `stop_requested` event
        self._signalled: int | None = None
        self._group: Any = None  # the gloo group stop codes travel on when the default group is NCCL
        self._told = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._signalled is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: give up on the graceful path
        self._signalled = signum

    def local_reason(self) -> StopReason | None:
        if self.job.stop_requested():
            return StopReason.STOP
        if self._signalled is not None:
            return StopReason.PREEMPT
        return None

    def sync(self, reason: StopReason | None) -> StopReason | None:
        """The reason every rank agrees on: the all-reduced (max) stop code; `reason` itself in a single process.

        A collective: in a distributed run every rank must call it, the same number of times.
        """
        return _STOP_REASONS[self.all_max(_STOP_CODES[reason])]

    def all_max(self, value: int) -> int:
        """The max of `value` over the ranks (stop codes, budget codes); `value` itself in a single process.

        A collective: in a distributed run every rank must call it, the same number of times. The value
        travels as a CPU tensor over gloo (the default group when it has gloo, else a gloo group made on the
        first call), so it neither needs nor synchronises a GPU.
        """
        dist = distributed()
        if dist is None:
            return value
        import torch

        if self._group is None:
            backend = str(dist.get_backend())
            self._group = dist.GroupMember.WORLD if "gloo" in backend else dist.new_group(backend="gloo")
        code = torch.tensor([int(value)], dtype=torch.int32)
        dist.all_reduce(code, op=dist.ReduceOp.MAX, group=self._group)
        return int(code.item())

    def check(self) -> StopReason | None:
        """The reason to stop now, or None. Call once per optimizer step, on every rank. The first stop request
        seen appends a `stop_requested` event `{by: user}` (rank 0's reporter writes it); a preemption appends
        none (its `status_changed` to `requested`, and the worker's `restarted`, tell it)."""
        reason = self.sync(self.local_reason())
        if reason == StopReason.STOP and not self._told and self.reporter is not None:
            self._told = True
            self.reporter.event(EventType.STOP_REQUESTED, {"by": "user"})
        return reason


@dataclass
class ResolvedModel:
    entry: BaseModelEntry
    path: Path  # the materialised base model folder (library format)
    init_checkpoint: Path | None = None  # base_model was a UUID: start from this checkpoint's weights
    init_manifest: CheckpointManifest | None = None


@dataclass
class ResolvedDataset:
    name: str
    path: Path  # JSONL
    format: str  # felix_train.data.formats.DatasetFormat value
    num_records: int
    columns: list[str] = field(default_factory=list)


def resolve_datasets(spec: JobSpec, home: Any) -> tuple[list[ResolvedDataset], ResolvedDataset | None]:
    """A job's train datasets and its eval dataset (if named) from the registry, in the owner's namespace under
    the service: what the runner hands a trainer and what the estimate counts."""
    from felix_train.data.registry import DatasetRegistry

    registry = DatasetRegistry(home, owner=spec.engine.dataset_owner)

    def one(name: str) -> ResolvedDataset:
        m = registry.get(name)
        return ResolvedDataset(name=m.name, path=registry.data_path(name), format=str(getattr(m.format, "value", m.format)),
                               num_records=m.num_records, columns=list(m.columns or []))

    return [one(d.name) for d in spec.datasets], (one(spec.engine.eval.dataset) if spec.engine.eval.dataset else None)


@dataclass
class TrainContext:
    spec: JobSpec  # resolved: defaults filled in
    job: JobFolder
    reporter: Reporter
    checkpoints: CheckpointManager
    control: RunControl
    model: ResolvedModel
    train_data: list[ResolvedDataset]
    eval_data: ResolvedDataset | None  # engine.eval.dataset, else None (split engine.eval.fraction off train)
    resume_from: CheckpointManifest | None = None  # this job's last checkpoint: resume exactly from it
    is_main_process: bool = True
    device: str = "cpu"


@dataclass
class TrainResult:
    outcome: Outcome
    metrics: dict[str, Any] = field(default_factory=dict)  # final metrics (status.json when complete)
    last_checkpoint: CheckpointManifest | None = None
