"""The runner's lifecycle contract, with a fake trainer: statuses, exit codes, errors, stop/preempt."""

from __future__ import annotations

import json

import pytest

from felix_train.catalog import Algorithm, ModelFamily
from felix_train.jobs import JobFolder, JobState, JobStatus
from felix_train.runner import ExitCode, run_job
from felix_train.trainers import TRAINERS
from felix_train.trainers.context import Outcome, StopReason, TrainResult

SEEN: dict = {}


def fake_trainer(ctx):
    """Pretends to train: 5 steps, a checkpoint per step, obeys stop/preempt, or raises on demand."""
    SEEN["status_during_run"] = ctx.reporter.status()["status"]
    SEEN["resume_from"] = ctx.resume_from.step if ctx.resume_from else None
    mode = ctx.spec.name
    start = ctx.resume_from.step if ctx.resume_from else 0
    for step in range(start + 1, 6):
        staged = ctx.checkpoints.stage()
        (staged / "weights.bin").write_bytes(bytes([step]))
        last = ctx.checkpoints.commit(staged, step=step, epoch=step / 5, metrics={"eval_f1": step / 10})
        ctx.reporter.progress(step, 5, step / 5, force=True)
        ctx.reporter.log_metrics(step, {"loss": 1.0 / step}, epoch=step / 5)
        if mode == "explode" and step == 2:
            raise RuntimeError("boom at step 2")
        if mode == "stop" and step == 3:
            ctx.job.request_stop()
        if mode == "preempt" and step == 3 and start == 0:
            ctx.control._on_signal(15, None)
        reason = ctx.control.check()
        if reason is not None:
            return TrainResult(Outcome.STOPPED if reason == StopReason.STOP else Outcome.PREEMPTED, last_checkpoint=last)
    ctx.job.model_dir.mkdir(parents=True, exist_ok=True)
    return TrainResult(Outcome.COMPLETE, metrics={"eval_f1": 0.5, "train_loss": 0.2})


@pytest.fixture
def fake(monkeypatch, felix_home, tmp_path):
    monkeypatch.setitem(TRAINERS, (ModelFamily.GLINER2, Algorithm.SFT), __name__ + ":fake_trainer")
    monkeypatch.setattr("felix_train.runner._device", lambda: "cpu")
    monkeypatch.setattr("felix_train.models.resolve_model", lambda entry, home=None: tmp_path)
    data = tmp_path / "ner.jsonl"
    data.write_text(json.dumps({"input": "Ada lives in Paris", "output": {"entities": {"person": ["Ada"]}}}) + "\n")
    from felix_train.data.registry import DatasetRegistry

    DatasetRegistry(felix_home).add("ner", data)
    SEEN.clear()
    return felix_home


def spec(name: str) -> dict:
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "ner"}], "name": name,
            "engine": {"keep_last": 2, "report_to": []}}


def test_complete(fake):
    assert run_job(spec("ok"), job_id="j1") == ExitCode.COMPLETE
    job = JobFolder("j1")
    status = job.read_status()
    assert SEEN["status_during_run"] == "running"
    assert status["status"] == "complete" and status["metrics"]["eval_f1"] == 0.5
    assert status["started_at"] and status["finished_at"] and status["progress"]["step"] == 5
    assert status["data"] == {"ner": 1}
    assert json.loads(job.spec_path.read_text())["num_epochs"] == 3  # resolved spec, defaults filled
    assert len(job.metrics_path.read_text().splitlines()) == 5
    assert "dataset ner: 1 records" in job.log_path.read_text()
    assert (job.root / "loss.png").exists()
    # retention: last 2 + best (the best is also the last here)
    steps = sorted(json.loads((p / "checkpoint.json").read_text())["step"] for p in job.checkpoints_dir.iterdir())
    assert steps == [4, 5]
    # rerunning a complete job does nothing
    assert run_job(spec("ok"), job_id="j1") == ExitCode.COMPLETE


def test_failure_keeps_logs_and_checkpoint(fake):
    assert run_job(spec("explode"), job_id="j2") == ExitCode.FAILED
    job = JobFolder("j2")
    status = job.read_status()
    assert status["status"] == "failed"
    assert status["error"]["type"] == "RuntimeError" and "boom at step 2" in status["error"]["message"]
    assert "test_runner.py" in status["error"]["where"]
    assert "boom at step 2" in job.log_path.read_text()
    assert len(list(job.checkpoints_dir.iterdir())) == 2


def test_stop_request_cancels(fake):
    assert run_job(spec("stop"), job_id="j3") == ExitCode.CANCELLED
    job = JobFolder("j3")
    assert job.read_status()["status"] == "cancelled"
    assert not job.stop_requested(), "the stop request is consumed"


def test_preempt_then_resume(fake):
    assert run_job(spec("preempt"), job_id="j4") == ExitCode.PREEMPTED
    job = JobFolder("j4")
    assert job.read_status()["status"] == "requested"
    assert run_job(spec("preempt"), job_id="j4") == ExitCode.COMPLETE
    assert SEEN["resume_from"] == 3
    assert job.read_status()["attempts"] == 2


def test_rerun_with_different_spec_is_refused(fake):
    assert run_job(spec("ok"), job_id="j5") == ExitCode.COMPLETE
    other = spec("ok")
    other["num_epochs"] = 9
    assert run_job(other, job_id="j5") == ExitCode.SPEC_INVALID


def test_a_job_written_before_a_spec_field_existed_still_resumes(fake):
    assert run_job(spec("preempt"), job_id="j5b") == ExitCode.PREEMPTED
    job = JobFolder("j5b")
    stored = json.loads(job.spec_path.read_text())
    del stored["engine"]["mention_replacement"]  # as written by the code before the field was added
    job.spec_path.write_text(json.dumps(stored))
    assert run_job(spec("preempt"), job_id="j5b") == ExitCode.COMPLETE
    assert SEEN["resume_from"] == 3


def test_invalid_spec_exit_2_and_named_job_marked_failed(fake):
    bad = spec("ok")
    bad["learning_rate"] = -1
    assert run_job(bad) == ExitCode.SPEC_INVALID
    assert run_job(bad, job_id="j6") == ExitCode.SPEC_INVALID
    status = JobFolder("j6").read_status()
    assert status["status"] == "failed" and status["error"]["errors"][0]["loc"] == ["learning_rate"]


def test_missing_dataset_exit_3(fake):
    s = spec("ok")
    s["datasets"] = [{"name": "nope"}]
    assert run_job(s, job_id="j7") == ExitCode.DATASET_INVALID
    assert JobFolder("j7").read_status()["status"] == JobStatus.FAILED.value


def test_jobs_cli(fake, capsys):
    from felix_train.cli import main

    assert run_job(spec("ok"), job_id="j8") == 0
    capsys.readouterr()
    assert main(["jobs", "list"]) == 0 and "j8" in capsys.readouterr().out
    assert main(["jobs", "checkpoints", "j8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == [4, 5] and all(len(r["uuid"]) == 36 for r in rows)
    assert main(["jobs", "logs", "j8"]) == 0 and "job complete" in capsys.readouterr().out
    assert main(["jobs", "stop", "j8"]) == 1  # not running
    assert main(["jobs", "delete", "j8"]) == 0
    assert not JobFolder("j8").root.exists()
    assert main(["jobs", "show", "j8"]) == 1


def test_a_job_without_an_id_gets_the_one_job_id_format(fake):
    import re

    from felix_train.jobs import JOB_ID_PATTERN, list_jobs

    assert run_job(spec("ok")) == ExitCode.COMPLETE
    (status,) = list_jobs()
    assert re.fullmatch(r"job-[0-9a-f]{32}", status["id"]) and re.match(JOB_ID_PATTERN, status["id"])


def test_status_json_keeps_its_keys_through_typed_updates(fake):
    """status.json is written through `JobState`; an update adds no key a dict update would not have."""
    assert run_job(spec("ok"), job_id="j9") == ExitCode.COMPLETE
    status = JobFolder("j9").read_status()
    assert set(status) == {"id", "name", "status", "created_at", "started_at", "finished_at", "progress", "error",
                           "metrics", "base_model", "project_id", "training_type", "training_algorithm", "attempts",
                           "data", "estimated_finish", "trained_tokens", "hyperparameters"}  # issue 20's job object
    assert set(status["progress"]) == {"step", "total_steps", "epoch", "eta_s", "estimated_finish"}  # no tokens: fake
    assert status["error"] is None


def test_failure_before_training_writes_a_typed_error(fake):
    from felix_train.jobs import JobError

    s = spec("ok")
    s["datasets"] = [{"name": "nope"}]
    assert run_job(s, job_id="j10") == ExitCode.DATASET_INVALID
    state = JobFolder("j10").read_state()
    assert isinstance(state.error, JobError) and state.error.type == "SpecError" and state.created_at
    assert state.error.errors[0]["type"] == "dataset_not_found"


def test_a_tracker_whose_package_is_missing_fails_the_job_at_start(fake, monkeypatch):
    """`engine.report_to` names a tracker whose package is not installed: refused before training, saying what
    to install (never silently ignored)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    s = spec("ok")
    s["engine"]["report_to"] = ["tensorboard"]
    assert run_job(s, job_id="j11") == ExitCode.SPEC_INVALID
    status = JobFolder("j11").read_status()
    assert status["status"] == "failed" and "status_during_run" not in SEEN
    (item,) = status["error"]["errors"]
    assert item["loc"] == ["engine", "report_to", 0] and item["type"] == "report_to_unavailable"
    assert "pip install tensorboard" in item["msg"]
    assert status["error"]["code"] == "report_to_unavailable"


# -- issue 16: one run per job, whole logs for followers, clean resumes, error codes -------------------------------

def _snapshot(job: JobFolder) -> dict:
    """Every file of a job folder (the lock file aside) and its bytes."""
    return {str(p.relative_to(job.root)): p.read_bytes() for p in sorted(job.root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _pretend_running(job_id: str) -> JobFolder:
    job = JobFolder(job_id)
    job.create()
    job.write_state(JobState(id=job_id, status=JobStatus.RUNNING))
    job.log_path.write_text("2024-01-01T00:00:00+00:00 INFO  training\n")
    job.request_stop()
    return job


def test_a_second_run_of_a_running_job_is_refused_and_touches_nothing(fake, capsys):
    """#1: another run holds the job's lock: exit 5 at once, a message naming the holder, the folder untouched
    (status.json, train.log, STOP), even for a spec that is itself invalid."""
    import os

    from felix_train.jobs import status_after_exit

    job = _pretend_running("dup")
    before = _snapshot(job)
    with job.lock():
        capsys.readouterr()
        assert run_job(spec("ok"), job_id="dup") == ExitCode.BUSY == 5
        err = capsys.readouterr().err
        assert f"job dup is already running (pid {os.getpid()})" in err and "felix-train jobs stop dup" in err
        bad = spec("ok")
        bad["learning_rate"] = -1
        assert run_job(bad, job_id="dup") == ExitCode.BUSY
        assert _snapshot(job) == before
        assert "status_during_run" not in SEEN
    # a worker requeues a refused duplicate without writing its state: the live run's state is the job's
    assert status_after_exit(ExitCode.BUSY, file_status="running") == JobStatus.REQUESTED


def test_the_lock_dies_with_its_holder(fake, tmp_path):
    """#1: a run killed -9 leaves no stale lock: the next run of the job goes ahead."""
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from felix_train.jobs import JobFolder; "
         "l = JobFolder(sys.argv[1]).lock().acquire(); print('locked', flush=True); time.sleep(600)", "k9"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_job(spec("ok"), job_id="k9") == ExitCode.BUSY
        assert not JobFolder("k9").status_path.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_job(spec("ok"), job_id="k9") == ExitCode.COMPLETE


def test_the_ranks_of_a_launch_are_not_refused_by_their_launcher_s_lock(fake, monkeypatch):
    """#1: `launch_distributed`'s launching process holds the lock and names itself (`FELIX_JOB_LOCK`) to its
    ranks; its rank 0 (a descendant) runs, while the variable from a non-ancestor or for another job counts not."""
    import os

    from felix_train.launch import LOCK_HOLDER_ENV, lock_held_by_launcher

    monkeypatch.setenv(LOCK_HOLDER_ENV, f"jl:{os.getpid()}")
    assert not lock_held_by_launcher("jl")  # this process is no ancestor of itself
    monkeypatch.setenv(LOCK_HOLDER_ENV, f"other:{os.getppid()}")
    assert not lock_held_by_launcher("jl")
    monkeypatch.setenv(LOCK_HOLDER_ENV, f"jl:{os.getppid()}")  # as if our parent were the launching process
    assert lock_held_by_launcher("jl")
    with JobFolder("jl").lock():
        assert run_job(spec("ok"), job_id="jl") == ExitCode.COMPLETE


@pytest.mark.parametrize("mode,last_line,code", [
    ("ok", "metrics: eval_f1=0.5, train_loss=0.2", ExitCode.COMPLETE),
    ("stop", "stopped on request", ExitCode.CANCELLED),
    ("preempt", "preempted; checkpoint", ExitCode.PREEMPTED),
    ("explode", "boom at step 2", ExitCode.FAILED),
])
def test_the_log_is_whole_before_the_final_status(fake, monkeypatch, mode, last_line, code):
    """#2: a follower stops at the final status, so every line of the ending is in train.log before it is
    written (the complete job's last two lines, "job complete: model in ..." and "metrics: ...", included)."""
    seen = []
    real = JobFolder.update_state

    def spy(self, **fields):
        if fields.get("finished_at") or fields.get("status") == JobStatus.REQUESTED:
            seen.append((fields.get("status"), self.log_path.read_text()))
        return real(self, **fields)

    monkeypatch.setattr(JobFolder, "update_state", spy)
    assert run_job(spec(mode), job_id=f"log-{mode}") == code
    status, log = seen[-1]
    assert last_line in log, (status, log[-300:])
    if mode == "ok":
        assert "job complete: model in" in log


def test_bad_input_exits_2_without_a_traceback(fake, tmp_path, capsys):
    """#3: a Latin-1 spec file is a spec error naming the file and the byte; a job id that would leave
    `$FELIX_HOME/jobs` is refused with exit 2, creating nothing."""
    latin = tmp_path / "spec.yaml"
    latin.write_bytes("base_model: felix/tiny-gliner2\nname: caf\xe9\ndatasets: [{name: ner}]\n".encode("latin-1"))
    assert run_job(latin) == ExitCode.SPEC_INVALID
    err = capsys.readouterr().err
    assert str(latin) in err and "not UTF-8 at byte 40 (line 2: 0xe9)" in err and "Traceback" not in err
    assert run_job(spec("ok"), job_id="../../escape") == ExitCode.SPEC_INVALID
    err = capsys.readouterr().err
    assert "invalid job id" in err and "'../../escape'" in err
    assert not (fake / "escape").exists() and not (fake.parent / "escape").exists()
    assert not (fake / "jobs").exists() or not any((fake / "jobs").iterdir())


def test_resume_cuts_metrics_back_and_removes_stale_staging(fake):
    """#6: lines logged after the resumed checkpoint are dropped (no step twice), a torn line too, and the
    staging folders of a run killed while writing a checkpoint are removed."""
    assert run_job(spec("preempt"), job_id="r1") == ExitCode.PREEMPTED
    job = JobFolder("r1")
    with open(job.metrics_path, "a") as fh:  # what a run killed after its checkpoint at step 3 logged
        fh.write(json.dumps({"step": 4, "loss": 0.25}) + "\n" + '{"step": 5, "lo')
    stale = job.work_dir / "staging-0123456789ab"
    stale.mkdir(parents=True)
    (stale / "weights.bin").write_bytes(b"x")
    assert run_job(spec("preempt"), job_id="r1") == ExitCode.COMPLETE
    steps = [json.loads(line)["step"] for line in job.metrics_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert not list(job.work_dir.glob("staging-*"))
    assert "2 line(s) after step 3 removed" in job.log_path.read_text()


def test_errors_carry_a_stable_code(fake, monkeypatch):
    """#9: `error.code` is an `ErrorCode` an API can answer with; `where` stays for the log and operators."""
    from felix_train.errors import CheckpointNotFound, ModelNotAvailable
    from felix_train.jobs import ErrorCode, JobError

    assert run_job(spec("explode"), job_id="c1") == ExitCode.FAILED
    error = JobFolder("c1").read_status()["error"]
    assert error["code"] == ErrorCode.INTERNAL == "internal" and "test_runner.py" in error["where"]
    bad = spec("ok")
    bad["learning_rate"] = -1
    assert run_job(bad, job_id="c2") == ExitCode.SPEC_INVALID
    assert JobFolder("c2").read_status()["error"]["code"] == "spec_invalid"
    missing = spec("ok")
    missing["datasets"] = [{"name": "nope"}]
    assert run_job(missing, job_id="c3") == ExitCode.DATASET_INVALID
    assert JobFolder("c3").read_status()["error"]["code"] == "dataset_invalid"
    assert JobError.of(ModelNotAvailable("x")).code == "model_not_available"
    assert JobError.of(CheckpointNotFound("x")).code == "checkpoint_not_found"
    assert {c.value for c in ErrorCode} >= {"spec_invalid", "dataset_invalid", "model_not_available",
                                           "checkpoint_not_found", "report_to_unavailable", "internal", "busy",
                                           "out_of_memory", "killed", "preempted_too_often"}
