"""What a run tells the world: status.json, train.log, metrics.jsonl, TensorBoard, loss.png.

status.json is written through `JobFolder.update_state` (the typed `JobState`), never built as a dict here.

Only the main process writes (`is_main=False` turns every write into a no-op), so
trainers call the reporter on every rank without checking.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from felix_train.events import EventLevel, EventType, append_event, cut_events
from felix_train.jobs import JobFolder, JobState, Progress, append_line, atomic_write_bytes, read_json, utcnow


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return value


class Reporter:
    """Writes one job's human log, metric stream and status, throttling progress writes."""

    def __init__(self, job: JobFolder, *, is_main: bool = True, echo: bool = True, tensorboard: bool = False,
                 progress_interval_s: float = 0.5):
        self.job = job
        self.is_main = is_main
        self.echo = echo
        self.tensorboard = tensorboard
        self.progress_interval_s = progress_interval_s
        self._last_progress_write = 0.0
        self._t0: float | None = None
        self._step0 = 0
        self._tb = None

    # -- train.log -----------------------------------------------------------
    def log(self, message: str, level: str = "INFO") -> None:
        if not self.is_main:
            return
        for line in str(message).splitlines() or [""]:
            append_line(self.job.log_path, f"{utcnow()} {level:<5} {line}")
        if self.echo:
            print(f"[felix] {message}", file=sys.stderr, flush=True)

    # -- metrics.jsonl ---------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, Any], *, epoch: float | None = None) -> None:
        if not self.is_main:
            return
        record = {"step": int(step), "epoch": None if epoch is None else round(float(epoch), 4), "time": utcnow()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        append_line(self.job.metrics_path, json.dumps(record))
        if self.tensorboard:
            self._tb_write(step, metrics)

    def cut_metrics(self, step: int) -> int:
        """Keep the metrics.jsonl lines with `step` ≤ `step` (a resumed run repeats the steps after its checkpoint;
        their old lines would appear twice); a torn or unreadable line goes too. Atomic: the kept lines are written
        to a temp file renamed over metrics.jsonl. Returns how many lines were removed (main process only)."""
        path = self.job.metrics_path
        if not self.is_main or not path.exists():
            return 0
        kept, removed = [], 0
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    ok = isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step
                except ValueError:
                    ok = False
                if ok:
                    kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
                else:
                    removed += 1
        if removed:
            atomic_write_bytes(path, b"".join(kept))
        return removed

    # -- events.jsonl ----------------------------------------------------------
    def event(self, type: EventType | str, data: dict[str, Any] | None = None, *,
              level: EventLevel | str = EventLevel.INFO, step: int | None = None) -> None:
        """Append a typed event (felix_train.events) to the job's event list (main process only)."""
        if self.is_main:
            append_event(self.job.root, type, {k: _jsonable(v) for k, v in (data or {}).items()}, level=level,
                         step=step)

    def cut_events(self, step: int) -> int:
        """Drop the events of steps after `step` (see `felix_train.events.cut_events`); main process only."""
        return cut_events(self.job.root, step) if self.is_main else 0

    def read_metrics(self) -> list[dict]:
        if not self.job.metrics_path.exists():
            return []
        with open(self.job.metrics_path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def _tb_write(self, step: int, metrics: dict[str, Any]) -> None:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter  # heavy: only once training logs

            self._tb = SummaryWriter(log_dir=str(self.job.tensorboard_dir))
        for key, value in metrics.items():
            value = _jsonable(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(key, value, int(step))
        self._tb.flush()

    # -- status.json -------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.job.status_path, default={}) or {}

    def update_status(self, **fields: Any) -> JobState:
        """Set `fields` of status.json through `JobFolder.update_state` (written on the main process only)."""
        if self.is_main:
            return self.job.update_state(**fields)
        return self.job.updated_state(**fields)

    def start_clock(self, step: int = 0) -> None:
        self._t0 = time.monotonic()
        self._step0 = step

    def progress(self, step: int, total_steps: int, epoch: float | None = None, *, force: bool = False,
                 **extra: Any) -> None:
        """Record progress; the ETA extrapolates this process's own rate (resumed steps excluded).

        `extra` fields join the progress as they are (e.g. `trained_tokens`, `tokens_per_s`, `mfu`);
        `estimated_finish` is now + the ETA (status.json's `estimated_finish` while running).
        """
        if not self.is_main:
            return
        now = time.monotonic()
        if not force and now - self._last_progress_write < self.progress_interval_s:
            return
        self._last_progress_write = now
        if self._t0 is None:
            self.start_clock(step)
        done = step - self._step0
        eta = None
        if done > 0 and total_steps:
            eta = round((now - self._t0) / done * max(total_steps - step, 0), 1)
        finish = None if eta is None else (datetime.now(timezone.utc) + timedelta(seconds=eta)).isoformat(timespec="seconds")
        self.update_status(progress=Progress(step=int(step), total_steps=int(total_steps or 0),
                                             epoch=None if epoch is None else round(float(epoch), 4), eta_s=eta,
                                             estimated_finish=finish, **{k: _jsonable(v) for k, v in extra.items()}))

    # -- plots -------------------------------------------------------------------
    def write_loss_plot(self) -> None:
        """`loss.png`: train (and eval) loss against step, from metrics.jsonl."""
        if not self.is_main:
            return
        rows = self.read_metrics()
        train = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
        evals = [(r["step"], r["eval_loss"]) for r in rows if isinstance(r.get("eval_loss"), (int, float))]
        if not train and not evals:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        if train:
            ax.plot(*zip(*train), label="train loss")
        if evals:
            ax.plot(*zip(*evals), "o-", label="eval loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"job {self.job.id}")
        ax.legend()
        fig.tight_layout()
        tmp = self.job.root / ".loss.png.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(self.job.root / "loss.png")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
