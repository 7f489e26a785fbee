"""Issue 20 #3: the events a run writes (fake trainer): status changes, step metrics, checkpoints, stop, failure,
a resume that repeats no step event; the loss watch, compact step data and length warnings (the reporter)."""

from __future__ import annotations

import json
import math

from test_runner import fake, spec  # noqa: F401  (the runner's fake-trainer fixture and spec)

from felix_train.checkpoints import list_checkpoints
from felix_train.events import EventType, append_event, read_events
from felix_train.jobs import JobFolder
from felix_train.reporting import EVENT_MAX_KEYS, LossWatch, Reporter
from felix_train.runner import ExitCode, run_job


def _of(events: list[dict], type: EventType) -> list[dict]:
    return [e for e in events if e["type"] == type.value]


def _statuses(events: list[dict]) -> list[str]:
    return [e["data"]["status"] for e in _of(events, EventType.STATUS_CHANGED)]


def test_a_complete_run_tells_running_steps_checkpoints_complete_in_order(fake):
    assert run_job(spec("ok"), job_id="ev-ok") == ExitCode.COMPLETE
    job = JobFolder("ev-ok")
    events = read_events(job.root)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "status_changed" and events[0]["data"] == {"status": "running",
                                                                            "previous": "requested"}
    assert events[-1]["type"] == "status_changed" and events[-1]["data"]["status"] == "complete"
    assert _statuses(events) == ["running", "complete"]
    steps = _of(events, EventType.STEP_METRICS)
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5]
    assert steps[0]["data"] == {"loss": 1.0, "epoch": 0.2}
    saved = _of(events, EventType.CHECKPOINT_SAVED)
    assert [e["data"]["step"] for e in saved] == [1, 2, 3, 4, 5]
    existing = {m.uuid for m in list_checkpoints(job)}
    removed = {u for e in saved for u in e["data"]["removed"]}
    assert {e["data"]["uuid"] for e in saved} - removed == existing  # the saved UUIDs that retention kept
    # a rerun of a complete job writes nothing
    assert run_job(spec("ok"), job_id="ev-ok") == ExitCode.COMPLETE
    assert read_events(job.root) == events


def test_a_stop_request_is_told_once_then_cancelled(fake):
    assert run_job(spec("stop"), job_id="ev-stop") == ExitCode.CANCELLED
    events = read_events(JobFolder("ev-stop").root)
    (stop,) = _of(events, EventType.STOP_REQUESTED)
    assert stop["data"] == {"by": "user"}
    assert _statuses(events) == ["running", "cancelled"] and events[-1]["data"]["status"] == "cancelled"
    assert stop["id"] < events[-1]["id"]


def test_a_failure_is_an_error_event_with_its_code(fake):
    assert run_job(spec("explode"), job_id="ev-fail") == ExitCode.FAILED
    last = read_events(JobFolder("ev-fail").root)[-1]
    assert last["type"] == "status_changed" and last["level"] == "error"
    assert last["data"]["status"] == "failed" and last["data"]["error"]["code"] == "internal"
    assert "boom at step 2" in last["data"]["error"]["message"]


def test_a_killed_run_resumed_repeats_no_step_event_and_reuses_no_id(fake):
    """Preempted after its checkpoint at step 3, then killed (as a kill -9 would leave it) after logging step 4: the
    rerun cuts the step events past step 3, says once where it resumed, and continues the ids."""
    assert run_job(spec("preempt"), job_id="ev-kill") == ExitCode.PREEMPTED
    job = JobFolder("ev-kill")
    for type in (EventType.STEP_METRICS, EventType.CHECKPOINT_SAVED):  # a killed later attempt's events
        append_event(job.root, type, {"uuid": "gone", "loss": 0.25}, step=4)
    highest = read_events(job.root)[-1]["id"]
    checkpoint = list_checkpoints(job)[-1]
    assert checkpoint.step == 3
    assert run_job(spec("preempt"), job_id="ev-kill") == ExitCode.COMPLETE
    events = read_events(job.root)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    assert [e["step"] for e in _of(events, EventType.STEP_METRICS)] == [1, 2, 3, 4, 5]
    assert "gone" not in {e["data"].get("uuid") for e in events}
    (resumed,) = _of(events, EventType.RESUMED)
    assert resumed["data"] == {"from_step": 3, "checkpoint": checkpoint.uuid}
    assert resumed["id"] == highest  # it took the cut line's id: the next events continue after every id written
    after = [e for e in events if e["id"] > highest]
    assert after and after[0]["type"] == "status_changed" and after[0]["data"]["status"] == "running"
    assert _statuses(events) == ["running", "requested", "running", "complete"]


def test_loss_watch_warns_once_per_nan_and_spike_episode():
    watch = LossWatch()
    assert [watch.check(x) for x in (1.0, 0.9, 0.8, 0.85, 0.8)] == [None] * 5
    code, message = watch.check(3.0)
    assert code == "loss_spike" and "median 0.85" in message
    assert watch.check(3.2) is None  # the same spike goes on: no second warning
    assert watch.check(0.8) is None
    assert watch.check(4.0)[0] == "loss_spike"  # a new one after a normal loss
    assert watch.check(float("nan"))[0] == "loss_nan"
    assert watch.check(math.inf) is None
    assert watch.check(0.7) is None and watch.check(float("nan"))[0] == "loss_nan"
    quiet = LossWatch()  # near-zero losses (GRPO's): relative jumps under min_jump are no spike
    assert all(quiet.check(x) is None for x in (0.001, 0.002, 0.001, 0.003, 0.002, 0.02, 0.05))


def test_metric_events_are_compact_one_per_step_and_evals_apart(tmp_path):
    job = JobFolder("rep", tmp_path)
    job.create()
    reporter = Reporter(job, echo=False)
    many = {f"m{i}": i / 3 for i in range(40)}
    reporter.log_metrics(1, {"loss": 0.123456789, "note": "text", "grad_norm": None, **many}, epoch=0.5)
    reporter.log_metrics(1, {"train_runtime": 3.0, "train_loss": 0.1})  # HF's end summary at the same step
    reporter.log_metrics(1, {"eval_loss": 0.5, "eval_f1": 0.25})
    for step, loss in zip(range(2, 9), (1, 1, 1, 1, 1, float("nan"), 5.0)):
        reporter.log_metrics(step, {"loss": loss})
    events = read_events(job.root)
    first = events[0]
    assert first["type"] == "step_metrics" and first["data"]["loss"] == 0.12346
    assert len(first["data"]) == EVENT_MAX_KEYS + 1 and first["data"]["epoch"] == 0.5  # + the epoch
    assert "note" not in first["data"] and "grad_norm" not in first["data"]
    assert [e["step"] for e in _of(events, EventType.STEP_METRICS)] == list(range(1, 9))
    assert _of(events, EventType.EVAL_RESULT)[0]["data"] == {"eval_loss": 0.5, "eval_f1": 0.25}
    warnings = _of(events, EventType.WARNING)
    assert [(w["data"]["code"], w["step"], w["level"]) for w in warnings] == [("loss_nan", 7, "warning"),
                                                                                ("loss_spike", 8, "warning")]
    assert _of(events, EventType.STEP_METRICS)[6]["data"] == {"loss": None}
    assert len(json.dumps(_of(events, EventType.STEP_METRICS)[1])) < 200
    assert "WARN  step 7: training loss is nan" in job.log_path.read_text()
    assert Reporter(job, is_main=False).cut_events(0) == 0 and read_events(job.root) == events  # rank > 0: no-op


def test_length_policy_warnings_count_per_dataset(tmp_path):
    job = JobFolder("len", tmp_path)
    job.create()
    reporter = Reporter(job, echo=False)
    reporter.warn_lengths(truncated={"a": 2, "b": 0}, dropped=0, max_length=64, policy="truncate")
    reporter.warn_lengths(truncated=0, dropped=3, max_length=8, policy="drop", unit="prompts")
    (one, two) = read_events(job.root)
    assert one["data"] == {"code": "records_truncated", "message": "2 records truncated by "
                           "`engine.length_policy: truncate` (longer than 64)", "count": 2, "max_length": 64,
                           "policy": "truncate", "per_dataset": {"a": 2}}
    assert two["data"]["code"] == "records_dropped" and "per_dataset" not in two["data"]
