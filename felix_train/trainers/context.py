"""What the runner hands a trainer, and what a trainer hands back.

Trainers know nothing of the store, HTTP or the CLI: they read the resolved spec,
the resolved model and data, write through the reporter and checkpoint manager, and
poll `control` once per optimizer step.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from felix_train.catalog import BaseModelEntry
from felix_train.checkpoints import CheckpointManager, CheckpointManifest
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


class RunControl:
    """Stop and preemption requests, polled by trainers at step boundaries.

    `sync`, when set (distributed runs), turns a local reason into one every rank agrees on.
    """

    def __init__(self, job: JobFolder):
        self.job = job
        self._signalled: int | None = None
        self.sync: Callable[[StopReason | None], StopReason | None] | None = None

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

    def check(self) -> StopReason | None:
        """The reason to stop now, or None. Call once per optimizer step."""
        reason = self.local_reason()
        return self.sync(reason) if self.sync is not None else reason


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
