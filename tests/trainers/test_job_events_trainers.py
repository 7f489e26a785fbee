"""Issue 20 #3 with real trainers: a tiny GLiNER2 job (preempted in-process, then resumed) and a tiny SFT job write
ordered events: running → complete, a step event per logged step (none twice across the resume), eval results,
`checkpoint_saved` with the UUIDs that exist, the length policy's warning."""

from __future__ import annotations

import os
import signal

import torch
from lm_helpers import register, when_logged
from test_gliner2 import home, spec as g2_spec, store  # noqa: F401  (module fixtures: datasets, $FELIX_HOME)
from test_sft import chat_records, spec as sft_spec

from felix_train import run_job
from felix_train.checkpoints import list_checkpoints
from felix_train.events import append_event, read_events
from felix_train.jobs import JobFolder
from felix_train.runner import ExitCode


def _types(events: list[dict], type: str) -> list[dict]:
    return [e for e in events if e["type"] == type]


def _check_story(job: JobFolder, statuses: list[str]) -> list[dict]:
    """What every finished job's events must say; returns them."""
    events = read_events(job.root)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert [e["data"]["status"] for e in _types(events, "status_changed")] == statuses
    assert events[0]["type"] == "status_changed" and events[-1]["data"]["status"] == "complete"
    steps = [e["step"] for e in _types(events, "step_metrics")]
    assert steps and steps == sorted(set(steps)), steps  # ordered, none twice
    assert all("loss" in e["data"] for e in _types(events, "step_metrics"))
    saved = _types(events, "checkpoint_saved")
    removed = {u for e in saved for u in e["data"]["removed"]}
    assert {e["data"]["uuid"] for e in saved} - removed == {m.uuid for m in list_checkpoints(job)}
    return events


def test_gliner2_preempted_and_resumed_tells_it_once(home):  # noqa: F811
    torch.set_num_threads(1)
    job = JobFolder("ev-g2", home)
    data = g2_spec(num_epochs=2, engine={"save_steps": 2})
    when_logged(job, lambda: os.kill(os.getpid(), signal.SIGTERM))  # Python runs the handler in the main thread
    assert run_job(data, job_id=job.id, home=home) == ExitCode.PREEMPTED
    checkpoint = list_checkpoints(job)[-1]
    # what a run killed -9 after this checkpoint would have left: a later step's event, to be cut
    append_event(job.root, "step_metrics", {"loss": 9.9}, step=checkpoint.step + 1)
    assert run_job(data, job_id=job.id, home=home) == ExitCode.COMPLETE
    events = _check_story(job, ["running", "requested", "running", "complete"])
    assert [e["step"] for e in _types(events, "step_metrics")] == list(range(1, 11))  # 5 steps an epoch, logged each
    assert 9.9 not in {e["data"]["loss"] for e in _types(events, "step_metrics")}
    (resumed,) = _types(events, "resumed")
    assert resumed["data"] == {"from_step": checkpoint.step, "checkpoint": checkpoint.uuid}
    evals = _types(events, "eval_result")
    assert [e["step"] for e in evals] == [5, 10] and "eval_f1" in evals[0]["data"]


def test_sft_job_events_with_a_truncation_warning(model_store, tmp_path):
    records = chat_records(16, seed=3)
    records[0]["messages"][-1]["content"] += " and so on" * 40  # one record over max_length 64
    name = register(model_store, tmp_path, "sft-events", records)
    job = JobFolder("ev-sft", model_store)
    assert run_job(sft_spec(name, max_steps=4, save_steps=2, length_policy="truncate", eval={"fraction": 0.125}),
                   job_id=job.id, home=model_store) == ExitCode.COMPLETE
    events = _check_story(job, ["running", "complete"])
    assert [e["step"] for e in _types(events, "step_metrics")] == [1, 2, 3, 4]
    assert [e["data"]["step"] for e in _types(events, "checkpoint_saved")] == [2, 4]
    assert _types(events, "eval_result") and "eval_loss" in _types(events, "eval_result")[-1]["data"]
    (warning,) = _types(events, "warning")
    assert warning["data"]["code"] == "records_truncated" and warning["data"]["per_dataset"] == {name: 1}
    assert warning["id"] < _types(events, "step_metrics")[0]["id"]
