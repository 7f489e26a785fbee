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
from felix_train.jsonl import keep_lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return value


EVENT_MAX_KEYS = 16
"""A `step_metrics`/`eval_result` event carries at most this many figures (the first logged)."""


def _compact(metrics: dict[str, Any], epoch: float | None) -> dict[str, Any]:
    """An event's data from a metrics record: numbers only (null for NaN/inf), 5 significant digits, at most
    `EVENT_MAX_KEYS`, and the epoch (about 150 bytes a logged step: a 100k-step job logging every 10 steps writes
    ~1.5 MB of events)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None  # a NaN loss shows as null (and a `loss_nan` warning)
            continue
        value = _jsonable(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = value if isinstance(value, int) else float(f"{value:.5g}")
        if len(out) >= EVENT_MAX_KEYS:
            break
    if out and epoch is not None:
        out["epoch"] = round(float(epoch), 4)
    return out


class LossWatch:
    """A cheap detector over the logged training losses, one warning per episode.

    Rule: a logged loss that is NaN or infinite is `loss_nan`; a finite loss above `factor` × the median of the
    last `window` finite logged losses (with at least `min_history` of them, the median above 0) and at least
    `min_jump` above that median is `loss_spike` (`min_jump` keeps near-zero losses, such as GRPO's, quiet).
    Each kind warns once, then again only after a loss that is normal once more.
    """

    def __init__(self, *, factor: float = 3.0, window: int = 10, min_history: int = 5, min_jump: float = 0.1):
        self.factor, self.window, self.min_history, self.min_jump = factor, window, min_history, min_jump
        self.history: list[float] = []
        self.in_nan = self.in_spike = False

    def check(self, loss: Any) -> tuple[str, str] | None:
        """(code, message) when this logged loss starts a NaN or spike episode, else None."""
        if hasattr(loss, "item"):
            loss = loss.item()
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            return None
        loss = float(loss)
        if not math.isfinite(loss):
            found = None if self.in_nan else ("loss_nan", f"training loss is {loss}; lower `learning_rate` or raise "
                                                          "`engine.warmup_ratio`")
            self.in_nan = True
            return found
        self.in_nan = False
        found = None
        if len(self.history) >= self.min_history:
            median = sorted(self.history)[len(self.history) // 2]
            spike = median > 0 and loss > self.factor * median and loss - median >= self.min_jump
            if spike and not self.in_spike:
                found = ("loss_spike", f"training loss {loss:.4g} is over {self.factor:g}x the median {median:.4g} "
                                       f"of the last {len(self.history)} logged losses")
            self.in_spike = spike
        self.history = (self.history + [float(loss)])[-self.window:]
        return found


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
        self._last_step_event = -1
        self._loss_watch = LossWatch()

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
        """One metrics.jsonl line, and its event: `eval_result` when it has `eval_*` keys, else `step_metrics`
        (at most one per step: HF's end-of-training summary at the last logged step adds none). The event's data
        is compact (`_compact`): metrics.jsonl and `GET .../metrics` keep every figure. A logged `loss` also
        goes through the `LossWatch` (NaN and spike warnings)."""
        if not self.is_main:
            return
        record = {"step": int(step), "epoch": None if epoch is None else round(float(epoch), 4), "time": utcnow()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        append_line(self.job.metrics_path, json.dumps(record))
        if self.tensorboard:
            self._tb_write(step, metrics)
        data = _compact(metrics, epoch)
        if any(k.startswith("eval_") for k in metrics):
            self.event(EventType.EVAL_RESULT, data, step=step)
        elif data and step > self._last_step_event:
            self._last_step_event = int(step)
            self.event(EventType.STEP_METRICS, data, step=step)
        if "loss" in metrics:
            warning = self._loss_watch.check(metrics["loss"])
            if warning is not None:
                self.warn(warning[0], f"step {step}: {warning[1]}", step=step, loss=_jsonable(metrics["loss"]))

    def warn(self, code: str, message: str, *, step: int | None = None, **data: Any) -> None:
        """A warning: a WARN line in train.log and a `warning` event `{code, message, ...data}` (main process
        only). `code` is a stable word: `records_truncated`, `records_dropped`, `grpo_zero_std`, `loss_nan`,
        `loss_spike`."""
        self.log(message, level="WARN")
        self.event(EventType.WARNING, {"code": code, "message": message, **data}, level=EventLevel.WARNING, step=step)

    def cut_metrics(self, step: int) -> int:
        """Keep the metrics.jsonl lines with `step` ≤ `step` (a resumed run repeats the steps after its checkpoint;
        their old lines would appear twice); a torn or unreadable line goes too. Atomic: the kept lines are written
        to a temp file renamed over metrics.jsonl. Returns how many lines were removed (main process only)."""
        path = self.job.metrics_path
        if not self.is_main or not path.exists():
            return 0
        kept, removed = keep_lines(path.read_bytes(), lambda r: isinstance(r.get("step"), int) and r["step"] <= step)
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

    def warn_lengths(self, *, truncated: dict[str, int] | int, dropped: dict[str, int] | int, max_length: int,
                     policy: str, unit: str = "records") -> None:
        """The length policy's `records_truncated` / `records_dropped` warnings (one each, when any), with the
        count per dataset (`per_dataset`) where the trainer knows it."""
        for code, what, counts in (("records_truncated", "truncated", truncated),
                                   ("records_dropped", "dropped", dropped)):
            n = sum(counts.values()) if isinstance(counts, dict) else int(counts or 0)
            if not n:
                continue
            data: dict[str, Any] = {"count": n, "max_length": max_length, "policy": policy}
            if isinstance(counts, dict):
                data["per_dataset"] = {k: v for k, v in counts.items() if v}
            self.warn(code, f"{n} {unit} {what} by `engine.length_policy: {policy}` (longer than {max_length})", **data)

    def cut_events(self, step: int, *, resumed: dict[str, Any] | None = None) -> int:
        """Drop the events of steps after `step`, writing the `resumed` event when given (see
        `felix_train.events.cut_events`); main process only."""
        return cut_events(self.job.root, step, resumed=resumed) if self.is_main else 0

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
