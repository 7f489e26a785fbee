"""Issue 20 #3 and #5 over HTTP and the CLI: `GET .../events` (JSON pages, Server-Sent Events resuming after
`Last-Event-ID`), `GET .../metrics`, another user's 404, `felix-train jobs events`, and the worker's `restarted`."""

from __future__ import annotations

import json
import threading

from test_api import alice, app, bob, client, fake_options, store, submit, upload, worker  # noqa: F401
from test_worker import _kill_spec, _worker

from felix_train.cli import main
from felix_train.events import EventType, append_event, read_events
from felix_train.jobs import JobFolder, JobStatus


def _queued_job_with_events(client, alice, felix_home, n: int = 5) -> str:  # noqa: F811
    upload(client, alice)
    job_id = submit(client, alice, name="ev")["id"]
    root = JobFolder(job_id, felix_home).root
    for step in range(1, n + 1):
        append_event(root, EventType.STEP_METRICS, {"loss": 1 / step}, step=step)
    return job_id


def _sse(text: str) -> list[dict]:
    """The frames of an SSE body: {id, event, data}."""
    frames = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            frames.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return frames


def test_events_page_by_after_and_limit(client, alice, felix_home, store):  # noqa: F811
    job_id = _queued_job_with_events(client, alice, felix_home)
    url = f"/felix/training-jobs/{job_id}/events"
    first = client.get(url, headers=alice, params={"limit": 2}).json()
    assert [e["id"] for e in first["data"]] == [1, 2] and first["has_more"] and first["last_id"] == 2
    assert first["data"][0] == {**first["data"][0], "type": "step_metrics", "step": 1, "level": "info",
                                "data": {"loss": 1.0}}
    rest = client.get(url, headers=alice, params={"after": first["last_id"]}).json()
    assert [e["id"] for e in rest["data"]] == [3, 4, 5] and not rest["has_more"] and rest["last_id"] == 5
    empty = client.get(url, headers=alice, params={"after": 5}).json()
    assert empty == {"data": [], "has_more": False, "last_id": 5}
    append_event(JobFolder(job_id, felix_home).root, EventType.WARNING, {"code": "loss_spike"}, level="warning")
    only = client.get(url, headers=alice, params={"type": "warning"}).json()["data"]
    assert [e["id"] for e in only] == [6]
    assert client.get(url, headers=alice, params={"type": "nope"}).status_code == 422


def test_sse_resumes_after_last_event_id_and_ends_with_the_job(client, alice, felix_home, store):  # noqa: F811
    job_id = _queued_job_with_events(client, alice, felix_home)
    store.set_status(job_id=job_id, status=JobStatus.COMPLETE)
    headers = {**alice, "Accept": "text/event-stream"}
    r = client.get(f"/felix/training-jobs/{job_id}/events", headers={**headers, "Last-Event-ID": "3"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = _sse(r.text)
    assert [(f["id"], f["event"]) for f in frames] == [(4, "step_metrics"), (5, "step_metrics")]
    assert frames[0]["data"]["step"] == 4 and frames[0]["data"]["data"] == {"loss": 0.25}
    assert [f["id"] for f in _sse(client.get(f"/felix/training-jobs/{job_id}/events?after=4", headers=headers).text)] \
        == [5]


def test_sse_streams_a_running_job_until_it_ends(client, alice, worker, felix_home):  # noqa: F811
    upload(client, alice)
    fake_options(felix_home, "slow", steps=6, step_s=0.1)
    job = submit(client, alice, name="slow")
    runner = threading.Thread(target=worker.drain, kwargs={"timeout_s": 30})
    runner.start()
    try:
        chunks = []
        with client.stream("GET", f"/felix/training-jobs/{job['id']}/events",
                           headers={**alice, "Accept": "text/event-stream"}) as r:
            for chunk in r.iter_text():
                chunks.append(chunk)
    finally:
        runner.join()
    assert len(chunks) > 1  # streamed while running
    frames = _sse("".join(chunks))
    saved = [f["data"]["data"]["uuid"] for f in frames if f["event"] == "checkpoint_saved"]
    assert len(saved) == 6 and [f["id"] for f in frames] == sorted({f["id"] for f in frames})
    assert frames == _sse("".join(chunks))  # whole frames only
    assert [e["id"] for e in read_events(JobFolder(job["id"], felix_home).root)] == [f["id"] for f in frames]


def test_metrics_series_with_keys_and_after_step(client, alice, felix_home):  # noqa: F811
    upload(client, alice)
    job_id = submit(client, alice, name="m")["id"]
    path = JobFolder(job_id, felix_home).metrics_path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": 1, "epoch": 0.5, "time": "t1", "loss": 2.0, "learning_rate": 0.1},
            {"step": 2, "epoch": 1.0, "time": "t2", "loss": 1.0, "learning_rate": 0.05},
            {"step": 2, "epoch": 1.0, "time": "t3", "eval_loss": 1.5, "eval_f1": 0.4}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')  # a torn last line
    url = f"/felix/training-jobs/{job_id}/metrics"
    whole = client.get(url, headers=alice).json()
    assert whole["data"] == rows and whole["count"] == 3 and not whole["has_more"]
    assert whole["keys"] == ["eval_f1", "eval_loss", "learning_rate", "loss"]
    some = client.get(url, headers=alice, params={"keys": "loss,eval_f1", "after_step": 1}).json()
    assert some["data"] == [{"step": 2, "epoch": 1.0, "time": "t2", "loss": 1.0},
                            {"step": 2, "epoch": 1.0, "time": "t3", "eval_f1": 0.4}]
    assert client.get(url, headers=alice, params=[("keys", "eval_f1")]).json()["count"] == 1
    page = client.get(url, headers=alice, params={"limit": 1}).json()
    assert page["count"] == 1 and page["has_more"]


def test_another_users_events_and_metrics_are_not_found(client, alice, bob, felix_home):  # noqa: F811
    job_id = _queued_job_with_events(client, alice, felix_home)
    for path in ("/events", "/metrics"):
        assert client.get(f"/felix/training-jobs/{job_id}{path}", headers=alice).status_code == 200
        assert client.get(f"/felix/training-jobs/{job_id}{path}", headers=bob).status_code == 404
    r = client.get(f"/felix/training-jobs/{job_id}/events", headers={**bob, "Accept": "text/event-stream"})
    assert r.status_code == 404
    assert client.get(f"/felix/training-jobs/{job_id}/events").status_code == 401


def test_openapi_documents_both_routes_with_examples(client):  # noqa: F811
    doc = client.get("/openapi.json").json()
    events = doc["paths"]["/felix/training-jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {p["name"] for p in events["parameters"]} >= {"after", "limit", "type", "Last-Event-ID"}
    assert doc["components"]["schemas"]["EventsPublic"]["examples"]
    assert doc["components"]["schemas"]["MetricsPublic"]["examples"]
    assert "/felix/training-jobs/{job_id}/metrics" in doc["paths"]


def test_cli_prints_follows_and_waits_for_a_queued_job(felix_home, monkeypatch, capsys):
    """`jobs events ID`: a line per event (`--json`: the objects), `--after`; `-f` on a job still queued in the
    store waits for its folder, then prints events until the job ends (the final status change included)."""
    from felix_train import cli_jobs as cli
    from felix_train.service.store import Store

    store = Store(home=felix_home)  # noqa: F811
    user, _ = store.create_user(name="a")
    job = store.create_job(owner_id=user.id, name="j", spec={})
    folder = JobFolder(job.id, felix_home)

    def claimed():
        store.claim_job(worker_id="w")
        folder.create()
        folder.update_state(status=JobStatus.RUNNING)  # a status_changed event
        append_event(folder.root, EventType.STEP_METRICS, {"loss": 0.5}, step=1)

    def ends():
        store.finish_job(job_id=job.id, worker_id="w", status=JobStatus.COMPLETE)
        folder.update_state(status=JobStatus.COMPLETE)

    steps = iter([lambda: None, claimed, lambda: None, ends, lambda: None])
    monkeypatch.setattr(cli, "_sleep", lambda _s: next(steps)())
    try:
        assert main(["--home", str(felix_home), "jobs", "events", job.id, "-f"]) == 0
    finally:
        store.close()
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 3 and f"job {job.id} is requested: waiting for its events" in out.err
    assert lines[0].endswith("status_changed: status=running")
    assert "step_metrics step 1: loss=0.5" in lines[1] and "status=complete previous=running" in lines[2]
    assert next(steps, "done") == "done"

    assert main(["--home", str(felix_home), "jobs", "events", job.id, "--json", "--after", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["id"] for e in printed] == [2, 3] and printed[0]["type"] == "step_metrics"
    assert main(["--home", str(felix_home), "jobs", "events", "job-nope"]) == 1
    assert "no job 'job-nope'" in capsys.readouterr().err


def test_the_worker_tells_a_restart_after_a_kill(store, felix_home):  # noqa: F811
    user, _ = store.create_user(name="w")
    job = store.create_job(owner_id=user.id, name="j", spec=_kill_spec(kill_runs=1))
    _worker(store, felix_home, memory_events_path=felix_home / "no-such-memory.events").drain(timeout_s=30)
    assert store.get_job(job_id=job.id).status is JobStatus.COMPLETE
    events = read_events(JobFolder(job.id, felix_home).root)
    (restarted,) = [e for e in events if e["type"] == "restarted"]
    assert restarted["data"]["attempt"] == 1 and restarted["data"]["reason"] == "killed"
    assert restarted["data"]["signal"] == "SIGKILL" and restarted["data"]["checkpoint"]
