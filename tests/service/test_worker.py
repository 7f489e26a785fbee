"""The worker: claims jobs, runs them in child processes, mirrors status, stops, recovers.

Jobs here are quick fake runs (tests/service/fake_runner.py) behind the worker's real
child-process interface; the real runner is exercised by tests/service/test_e2e.py.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from felix_train.checkpoints import list_checkpoints
from felix_train.jobs import JobFolder, JobStatus, read_json
from felix_train.service.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
FAKE_RUNNER_CMD = [sys.executable, str(Path(__file__).resolve().parent / "fake_runner.py")]


def _runs(home: Path, job_id: str) -> list[dict]:
    path = JobFolder(job_id, home).root / "fake_runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _spawn_worker(db_url: str, home: Path, worker_id: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "felix_train.service.worker", "--home", str(home), "--database-url", db_url,
           "--worker-id", worker_id, "--runner-cmd", shlex.join(FAKE_RUNNER_CMD), "--log-level", "WARNING", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env, cwd=str(ROOT))


def _stop(procs: list[subprocess.Popen]) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=20))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


@pytest.fixture
def user(store):
    u, _ = store.create_user(name="alice")
    return u


def _worker(store, home, **kw) -> Worker:
    kw.setdefault("poll_s", 0.05)
    kw.setdefault("heartbeat_timeout_s", 5)
    return Worker(store, home=home, runner_cmd=FAKE_RUNNER_CMD, **kw)


# -- many workers -------------------------------------------------------------------------------


def test_four_workers_run_thirty_jobs_exactly_once(store, db_url, felix_home, user):
    ids = [store.create_job(owner_id=user.id, name=f"j{i}", spec={"fake": {"steps": 2, "step_s": 0.0}}).id
           for i in range(30)]
    workers = [_spawn_worker(db_url, felix_home, f"w{n}", "--concurrency", "2", "--poll", "0.05") for n in range(4)]
    try:
        _wait(lambda: store.list_jobs(owner_id=user.id, status=JobStatus.COMPLETE)[1] == 30, 60,
              "30 complete jobs")
    finally:
        codes = _stop(workers)
    assert codes == [0, 0, 0, 0]
    by_worker: dict[str, int] = {}
    for job_id in ids:
        job = store.get_job(job_id=job_id)
        runs = _runs(felix_home, job_id)
        assert len(runs) == 1, f"job {job_id} ran {len(runs)} times"
        assert job.attempts == 1 and job.worker_id == runs[0]["worker_id"]
        assert job.metrics == {"loss": 0.5, "eval_f1": 0.5} and job.progress["step"] == 2
        by_worker[job.worker_id] = by_worker.get(job.worker_id, 0) + 1
    assert sum(by_worker.values()) == 30 and len(by_worker) >= 2


# -- recovery -----------------------------------------------------------------------------------


def test_killed_worker_job_is_requeued_and_resumed(store, db_url, felix_home, user):
    job = store.create_job(owner_id=user.id, name="long",
                           spec={"fake": {"steps": 4, "step_s": 0.0, "checkpoint_every": 100, "hang_at_step": 2}})
    first = _spawn_worker(db_url, felix_home, "doomed", "--poll", "0.05", "--heartbeat-timeout", "1.5")
    folder = JobFolder(job.id, felix_home)
    try:
        _wait(lambda: list_checkpoints(folder), 20, "the first run's checkpoint at step 2")
        first_ckpt = list_checkpoints(folder)[0]
        assert first_ckpt.step == 2
        assert store.get_job(job_id=job.id).worker_id == "doomed"
        first.send_signal(signal.SIGKILL)
        first.wait()
        first_run = _runs(felix_home, job.id)[0]
        # the orphaned run got the parent-death SIGTERM: it checkpointed and left (exit 75)
        _wait(lambda: not _alive(first_run["pid"]), 10, "the first run to exit")
        assert read_json(folder.status_path)["status"] == "requested"
        assert store.get_job(job_id=job.id).status is JobStatus.RUNNING  # until the heartbeat times out
        second = _spawn_worker(db_url, felix_home, "rescuer", "--poll", "0.05", "--heartbeat-timeout", "1.5")
        try:
            _wait(lambda: store.get_job(job_id=job.id).status is JobStatus.COMPLETE, 20, "the job to complete")
        finally:
            assert _stop([second]) == [0]
    finally:
        _stop([first])
    done = store.get_job(job_id=job.id)
    runs = _runs(felix_home, job.id)
    assert done.attempts == 2 and done.worker_id == "rescuer"
    assert [r["worker_id"] for r in runs] == ["doomed", "rescuer"]
    assert runs[1]["resumed_from"] == first_ckpt.uuid and runs[1]["start_step"] == 2
    assert f"resuming from checkpoint {first_ckpt.uuid}" in folder.log_path.read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_children_gracefully_and_requeues(store, db_url, felix_home, user):
    if not db_url.startswith("sqlite"):
        pytest.skip("the shutdown path does not depend on the database")
    job = store.create_job(owner_id=user.id, name="long", spec={"fake": {"steps": 4, "hang_at_step": 1}})
    worker = _spawn_worker(db_url, felix_home, "w", "--poll", "0.05")
    folder = JobFolder(job.id, felix_home)
    try:
        _wait(lambda: list_checkpoints(folder), 20, "the run to reach its hang")
    finally:
        codes = _stop([worker])
    assert codes == [0]
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.REQUESTED and got.worker_id is None and got.attempts == 1
    assert "preempted" in folder.log_path.read_text()
    assert read_json(folder.status_path)["status"] == "requested"


# -- one worker, in process ------------------------------------------------------------------------


def test_stop_request_is_forwarded_and_ends_cancelled(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec={"fake": {"steps": 5, "hang_at_step": 2}})
    worker = _worker(store, felix_home)
    folder = JobFolder(job.id, felix_home)
    deadline = time.monotonic() + 20
    while 2 not in [c.step for c in list_checkpoints(folder)]:  # the run waits at step 2
        worker.tick()
        time.sleep(0.02)
        assert time.monotonic() < deadline
    worker.tick()
    assert store.get_job(job_id=job.id).progress["step"] == 2  # mirrored from status.json
    store.request_stop(job_id=job.id, owner_id=user.id)
    worker.drain(timeout_s=20)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.CANCELLED and got.finished_at is not None and got.stop_requested is False
    assert read_json(folder.status_path)["status"] == "cancelled"
    assert not folder.stop_requested()
    assert "stopped on request" in folder.log_path.read_text()


def test_failed_run_records_its_error(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec={"fake": {"fail": True}})
    _worker(store, felix_home).drain(timeout_s=20)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.FAILED and got.metrics is None
    assert got.error["message"] == "the fake run was told to fail"


def test_a_busy_run_is_requeued_and_leaves_the_job_alone(store, felix_home, user):
    # exit 5: another run holds the job's lock; the worker must not mark the job failed nor touch its folder
    job = store.create_job(owner_id=user.id, name="j", spec={"fake": {"busy_runs": 2}})
    _worker(store, felix_home).drain(timeout_s=30)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.COMPLETE and got.error is None
    folder = JobFolder(job.id, felix_home)
    assert "failed" not in folder.log_path.read_text()
    assert len(folder.root.joinpath("fake_runs.jsonl").read_text().splitlines()) == 1  # only the real run


def test_crashed_run_fails_with_its_output_in_the_log(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec={"fake": {"exit_code": 9}})
    _worker(store, felix_home).drain(timeout_s=20)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.FAILED and "exit code 9" in got.error["message"]
    folder = JobFolder(job.id, felix_home)
    assert "exit code 9" in folder.log_path.read_text()
    assert read_json(folder.status_path)["status"] == "failed"


def test_a_run_that_is_no_longer_ours_is_killed(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec={"fake": {"steps": 3, "hang_at_step": 1}})
    worker = _worker(store, felix_home)
    folder = JobFolder(job.id, felix_home)
    deadline = time.monotonic() + 20
    while not list_checkpoints(folder):
        worker.tick()
        time.sleep(0.02)
        assert time.monotonic() < deadline
    child = worker.children[job.id].proc
    # another worker presumed this one dead and requeued the job
    store.set_status(job_id=job.id, status=JobStatus.REQUESTED, worker_id=None)
    worker._heartbeat()
    assert child.poll() == -signal.SIGKILL and job.id not in worker.children


def test_concurrency_limits_runs_per_worker(store, felix_home, user):
    for i in range(3):
        store.create_job(owner_id=user.id, name=f"j{i}", spec={"fake": {"steps": 3, "hang_at_step": 1}})
    worker = _worker(store, felix_home, concurrency=2)
    worker.tick()
    assert len(worker.children) == 2 and store.list_jobs(owner_id=user.id, status=JobStatus.REQUESTED)[1] == 1
    worker.shutdown()
    deadline = time.monotonic() + 20
    while worker.children:
        worker.tick()
        time.sleep(0.02)
        assert time.monotonic() < deadline
    assert store.list_jobs(owner_id=user.id, status=JobStatus.REQUESTED)[1] == 3


def test_child_command(store, felix_home):
    from felix_train.service.store import ClaimedJob

    worker = Worker(store, home=felix_home)
    single = ClaimedJob(id="job-1", owner_id=1, spec={"engine": {}}, attempts=1, stop_requested=False)
    cmd = worker.command_for(single, Path("/h/jobs/job-1/request.json"))
    assert cmd[1:] == ["-m", "felix_train", "run", "/h/jobs/job-1/request.json", "--job-id", "job-1",
                       "--home", str(felix_home.resolve())]
    multi = ClaimedJob(id="job-2", owner_id=1, spec={"engine": {"distributed": {"num_processes": 4}}},
                       attempts=1, stop_requested=False)
    cmd = worker.command_for(multi, Path("spec.json"))
    assert cmd[1:5] == ["-m", "felix_train", "run", "spec.json"], "the runner relaunches itself under accelerate"
    with pytest.raises(ValueError, match="heartbeat"):
        Worker(store, home=felix_home, poll_s=5, heartbeat_timeout_s=1)


# -- runs killed by a signal: requeued and resumed, then failed with a code ------------------------------


def _kill_spec(**fake) -> dict:
    return {"fake": {"steps": 4, "step_s": 0.0, "kill_at_step": 2, **fake}}


def test_a_killed_run_is_requeued_and_resumes_from_its_checkpoint(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec=_kill_spec(kill_runs=1))
    _worker(store, felix_home, memory_events_path=felix_home / "no-such-memory.events").drain(timeout_s=30)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.COMPLETE and got.attempts == 2 and got.error is None
    folder = JobFolder(job.id, felix_home)
    runs = _runs(felix_home, job.id)
    assert len(runs) == 2 and runs[1]["start_step"] == 2 and runs[1]["resumed_from"] is not None
    log = folder.log_path.read_text()
    assert "killed by SIGKILL (killed) at step 2, attempt 1 of 3; requeued: the next run resumes from checkpoint " \
        f"{runs[1]['resumed_from']} (step 2)" in log
    assert "step 1/4" in log and f"resuming from checkpoint {runs[1]['resumed_from']}" in log  # one log, both runs
    assert read_json(folder.status_path)["status"] == "complete"


def test_oom_killed_runs_fail_with_out_of_memory_after_max_attempts(store, felix_home, user):
    events = felix_home / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    job = store.create_job(owner_id=user.id, name="j",
                           spec=_kill_spec(kill_runs=9, checkpoint_every=100, oom_events=str(events)))
    _worker(store, felix_home, max_attempts=2, memory_events_path=events).drain(timeout_s=30)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.FAILED and got.attempts == 2 and len(_runs(felix_home, job.id)) == 2
    assert got.error["code"] == "out_of_memory" and got.error["attempts"] == 2 and got.error["signal"] == 9
    assert {"type", "message", "where", "errors"} <= set(got.error)
    assert "OOM killer" in got.error["message"] and "giving up after 2 attempt(s)" in got.error["message"]
    folder = JobFolder(job.id, felix_home)
    status = read_json(folder.status_path)
    assert status["status"] == "failed" and status["error"]["code"] == "out_of_memory"
    assert [c.step for c in list_checkpoints(folder)] == [2, 3]  # both runs' checkpoints kept
    assert "attempt 1 of 2; requeued: the next run resumes from checkpoint" in folder.log_path.read_text()


def test_a_killed_run_without_attempts_left_fails_with_killed(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec=_kill_spec(kill_runs=9, kill_signal=int(signal.SIGINT)))
    events = felix_home / "memory.events"
    events.write_text("oom_kill 4\n")  # unchanged during the run: not an OOM kill
    _worker(store, felix_home, max_attempts=1, memory_events_path=events).drain(timeout_s=30)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.FAILED and got.attempts == 1
    assert got.error["code"] == "killed" and "killed by SIGINT" in got.error["message"]
    assert read_json(JobFolder(job.id, felix_home).status_path)["error"]["code"] == "killed"


def test_runs_preempted_on_every_attempt_fail_with_preempted_too_often(store, felix_home, user):
    job = store.create_job(owner_id=user.id, name="j", spec=_kill_spec(kill_runs=9, kill_signal=int(signal.SIGTERM)))
    _worker(store, felix_home, max_attempts=2).drain(timeout_s=30)
    got = store.get_job(job_id=job.id)
    assert got.status is JobStatus.FAILED and got.attempts == 2
    assert got.error["code"] == "preempted_too_often"
    folder = JobFolder(job.id, felix_home)
    assert read_json(folder.status_path)["error"]["code"] == "preempted_too_often"
    assert folder.log_path.read_text().count("preempted; rerun to resume") == 2


def test_max_attempts_flag(store, felix_home):
    from felix_train.service.worker import build_parser

    args = build_parser().parse_args(["--max-attempts", "5", "--memory-events", "/x/memory.events"])
    assert args.max_attempts == 5 and args.memory_events == "/x/memory.events"
    assert build_parser().parse_args([]).max_attempts == 3
    with pytest.raises(ValueError, match="max-attempts"):
        Worker(store, home=felix_home, max_attempts=0)


def test_children_learn_how_many_jobs_share_the_cpus(store, felix_home):
    # perf.threads divides the usable CPUs by FELIX_CONCURRENT_JOBS: a worker running 2 jobs at once says 2
    env = _worker(store, felix_home, concurrency=2)._child_env("job-x")
    assert env["FELIX_CONCURRENT_JOBS"] == "2"
