"""The CLI's command routing (`felix-train [--home DIR] COMMAND ...`), following logs, bad ids, closed pipes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from felix_train.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_a_leading_home_is_not_taken_for_a_spec(tmp_path, capsys):
    # `--home DIR` names an existing folder: it must not route the command to `run DIR`
    assert main(["--home", str(tmp_path), "jobs", "list"]) == 0
    assert "spec" not in capsys.readouterr().err.lower()


def test_a_spec_path_alone_still_runs(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    rc = main(["--home", str(tmp_path), str(missing)])
    assert rc == 2  # routed to `run`, which refuses the unreadable spec


def test_following_a_queued_job_waits_for_its_log_and_follows_it_to_the_end(felix_home, monkeypatch, capsys):
    """`jobs logs ID -f` on a job still queued in the store: it waits (no folder yet), then follows to the end."""
    from felix_train import cli_jobs as cli
    from felix_train.jobs import JobFolder, JobStatus, append_line
    from felix_train.service.store import Store

    monkeypatch.delenv("FELIX_DATABASE_URL", raising=False)
    store = Store(home=felix_home)  # $FELIX_HOME/felix.db: what the follower finds on its own
    user, _ = store.create_user(name="a")
    job = store.create_job(owner_id=user.id, name="j", spec={})
    folder = JobFolder(job.id, felix_home)

    def claimed():  # a worker claims it: the folder and its first status and log line appear
        store.claim_job(worker_id="w")
        folder.create()
        folder.update_state(status=JobStatus.RUNNING)
        append_line(folder.log_path, "step 1")

    def ends():  # the last lines, then the end
        append_line(folder.log_path, "job complete")
        folder.update_state(status=JobStatus.COMPLETE)
        store.finish_job(job_id=job.id, worker_id="w", status=JobStatus.COMPLETE)

    steps = iter([lambda: None, lambda: None, claimed, lambda: None, ends])
    monkeypatch.setattr(cli, "_sleep", lambda _s: next(steps)())
    try:
        assert main(["--home", str(felix_home), "jobs", "logs", job.id, "-f"]) == 0
    finally:
        store.close()
    out = capsys.readouterr()
    assert out.out == "step 1\njob complete\n"
    assert f"job {job.id} is requested: waiting for its log" in out.err
    assert next(steps, "done") == "done"  # it stopped at the end, not before


def test_following_an_unknown_job_fails_at_once(felix_home, monkeypatch, capsys):
    from felix_train import cli_jobs as cli

    monkeypatch.setattr(cli, "_sleep", lambda _s: pytest.fail("waited for a job that does not exist"))
    assert main(["--home", str(felix_home), "jobs", "logs", "job-nope", "-f"]) == 1
    assert "no job 'job-nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "spec.yaml", "--job-id", "../../escape"],
                                  ["spec.yaml", "--job-id", "../../escape"],
                                  ["jobs", "show", "../x"], ["jobs", "logs", "a/b", "-f"]])
def test_a_malformed_job_id_is_a_usage_error(felix_home, capsys, argv):
    assert main(["--home", str(felix_home), *argv]) == 2
    err = capsys.readouterr().err
    assert "job id must match" in err and "Traceback" not in err
    assert not (felix_home.parent / "escape").exists() and list(felix_home.iterdir()) == []


def test_a_closed_stdout_is_not_a_traceback(felix_home):
    """`felix-train jobs show ID | head`: the reader is gone before we write; exit 141, nothing on stderr."""
    from felix_train.jobs import JobFolder

    folder = JobFolder("job-pipe", felix_home)
    folder.create()
    folder.write_status({"id": "job-pipe", "status": "complete", "progress": {"step": 3}})
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away: every write fails with EPIPE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-m", "felix_train", "--home", str(felix_home), "jobs", "show",
                               "job-pipe"], stdout=write_end, stderr=subprocess.PIPE, env=env, cwd=str(ROOT),
                              timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr.decode()
    assert proc.stderr.decode() == ""
