"""The REST API through FastAPI's TestClient: every endpoint, its error paths, and user isolation.

Jobs are run by the real worker with quick fake runs (tests/service/fake_runner.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from felix_train.catalog import catalog_ids
from felix_train.jobs import JobFolder, JobStatus, atomic_write_json
from felix_train.service.api import Settings, create_app, make_download_token
from felix_train.service.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
FAKE_RUNNER_CMD = [sys.executable, str(Path(__file__).resolve().parent / "fake_runner.py")]

RECORDS = [
    {"input": "Alice works at Acme in Paris.", "output": {"entities": {"person": ["Alice"], "company": ["Acme"]}}},
    {"input": "Bob moved to Berlin last year.", "output": {"entities": {"person": ["Bob"], "city": ["Berlin"]}}},
    {"input": "Carol founded Initech.", "output": {"entities": {"person": ["Carol"], "company": ["Initech"]}}},
]
GOOD_JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()


@pytest.fixture
def app(felix_home):
    settings = Settings(home=felix_home, database_url=f"sqlite:///{felix_home / 'felix.db'}", secret_key="s3cret",
                        log_follow_poll_s=0.05)
    return create_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def store(app):
    return app.state.store


def _headers(store, name: str) -> dict:
    _, key = store.create_user(name=name)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def alice(store):
    return _headers(store, "alice")


@pytest.fixture
def bob(store):
    return _headers(store, "bob")


@pytest.fixture
def worker(store, felix_home):
    return Worker(store, home=felix_home, runner_cmd=FAKE_RUNNER_CMD, poll_s=0.05, heartbeat_timeout_s=5)


def upload(client, headers, name="ner", content=GOOD_JSONL, **form):
    return client.post("/felix/datasets", headers=headers, data={"name": name, **form},
                       files={"file": (f"{name}.jsonl", io.BytesIO(content), "application/jsonl")})


def spec(**overrides) -> dict:
    body = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "ner"}], "engine": {"max_steps": 2}}
    body.update(overrides)
    return body


def fake_options(home: Path, name: str, **options) -> None:
    path = home / "fake_options.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = options
    atomic_write_json(path, data)


def submit(client, headers, **overrides) -> dict:
    r = client.post("/felix/training-jobs", headers=headers, json=spec(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def complete_job(client, alice, worker) -> dict:
    """One of alice's jobs, run to `complete` by the worker."""
    assert upload(client, alice).status_code == 202
    job = submit(client, alice, name="done", project_id="proj")
    worker.drain(timeout_s=30)
    got = client.get(f"/felix/training-jobs/{job['id']}", headers=alice).json()
    assert got["status"] == "complete", got
    return got


def _run_until(worker: Worker, predicate, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        worker.tick()
        time.sleep(0.02)
        assert time.monotonic() < deadline, "timed out"


# -- auth and catalog ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("get", "/felix/training-jobs"), ("post", "/felix/training-jobs"), ("get", "/felix/training-jobs/job-1"),
    ("get", "/felix/training-jobs/job-1/logs"), ("get", "/felix/training-jobs/job-1/checkpoints"),
    ("get", "/felix/training-jobs/job-1/download"), ("post", "/felix/training-jobs/job-1/stop"),
    ("delete", "/felix/training-jobs/job-1"), ("get", "/felix/trained-models"), ("get", "/base-models"),
    ("get", "/felix/datasets"), ("get", "/felix/datasets/ner"), ("post", "/felix/datasets"),
])
def test_every_endpoint_needs_an_api_key(client, method, path):
    r = getattr(client, method)(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = getattr(client, method)(path, headers={"Authorization": "Bearer felix_not-a-key"})
    assert r.status_code == 401 and "unknown API key" in r.json()["detail"]


def test_base_models_is_the_catalog(client, alice):
    r = client.get("/base-models", headers=alice)
    assert r.status_code == 200
    rows = {m["id"]: m for m in r.json()}
    assert list(rows) == catalog_ids()
    assert rows["felix/tiny-gliner2"]["training_types"] == ["lora", "full"]
    assert rows["felix/tiny-gliner2"]["algorithms"] == ["sft"]
    assert rows["HuggingFaceTB/SmolLM2-135M-Instruct"]["algorithms"] == ["sft", "dpo", "grpo"]


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/felix/training-jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TrainingJobCreate"}
    assert "base_model" in schema["components"]["schemas"]["TrainingJobCreate"]["properties"]
    assert "EngineSpec" in schema["components"]["schemas"]


# -- datasets ------------------------------------------------------------------------------------------


def test_dataset_upload_is_validated_in_the_background(client, alice, app):
    r = upload(client, alice)
    assert r.status_code == 202 and r.json()["state"] == "processing" and r.json()["name"] == "ner"
    got = client.get("/felix/datasets/ner", headers=alice).json()  # the background task ran after the answer
    assert got["state"] == "ready" and got["format"] == "gliner2" and got["num_records"] == 3
    assert app.state.registry.for_owner(1).get("ner").state.value == "ready"

    bad = GOOD_JSONL + b'{"input": "no output"}\nnot json\n'
    assert upload(client, alice, name="broken", content=bad).status_code == 202
    got = client.get("/felix/datasets/broken", headers=alice).json()
    assert got["state"] == "failed" and got["num_errors"] == 2
    assert [e["line"] for e in got["errors"]] == [4, 5]
    assert "u1--" not in json.dumps(got)

    assert upload(client, alice).status_code == 409
    assert upload(client, alice, content=GOOD_JSONL + GOOD_JSONL, overwrite="true").status_code == 202
    assert client.get("/felix/datasets/ner", headers=alice).json()["num_records"] == 6

    listed = client.get("/felix/datasets", headers=alice).json()
    assert {d["name"]: d["state"] for d in listed["data"] if not d["builtin"]} == {"broken": "failed", "ner": "ready"}


def test_dataset_names_are_checked(client, alice):
    for name in ("../etc", "a/b", "", "x" * 101, ".hidden"):
        r = upload(client, alice, name=name)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"], (name, r.text)
    assert client.get("/felix/datasets/..%2F..%2Fjobs", headers=alice).status_code == 404


def test_dataset_delete(client, alice):
    upload(client, alice)
    submit(client, alice)  # a queued job trains on it
    assert client.delete("/felix/datasets/ner", headers=alice).status_code == 409
    client.get("/felix/training-jobs", headers=alice)
    upload(client, alice, name="other")
    r = client.delete("/felix/datasets/other", headers=alice)
    assert r.status_code == 200 and r.json()["success"] is True
    assert client.get("/felix/datasets/other", headers=alice).status_code == 404


def test_processing_datasets_are_validated_again_at_startup(felix_home):
    settings = Settings(home=felix_home, secret_key="k")
    app = create_app(settings)
    store = app.state.store
    user, _ = store.create_user(name="carol")
    src = felix_home / "up.jsonl"
    src.write_bytes(GOOD_JSONL)
    manifest = app.state.registry.for_owner(user.id).register_processing("late", src)
    store.create_dataset(owner_id=user.id, name="late", state="processing", manifest=manifest.model_dump(mode="json"))
    with TestClient(create_app(settings)):  # a restarted API process
        deadline = time.monotonic() + 10
        while store.get_dataset(owner_id=user.id, name="late").state != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_dataset_names_are_the_users_own(client, alice, bob):
    """A name that looks like another user's namespace is only a name: bob's `u1--ner` is answered as such."""
    upload(client, alice)  # alice is user 1: her `ner`
    assert upload(client, bob, name="u1--ner", content=GOOD_JSONL[:GOOD_JSONL.index(b"\n") + 1]).status_code == 202
    listed = [d for d in client.get("/felix/datasets", headers=bob).json()["data"] if not d["builtin"]]
    assert [(d["name"], d["num_records"]) for d in listed] == [("u1--ner", 1)]
    assert client.get("/felix/datasets/u1--ner", headers=bob).json()["name"] == "u1--ner"
    job = submit(client, bob, datasets=[{"name": "u1--ner"}], engine={"eval": {"dataset": "u1--ner"}})
    for got in (job, client.get(f"/felix/training-jobs/{job['id']}", headers=bob).json(),
                client.get("/felix/training-jobs", headers=bob).json()["data"][0]):
        assert got["configuration"]["datasets"] == [{"name": "u1--ner"}]
        assert got["configuration"]["engine"]["eval"]["dataset"] == "u1--ner"
        assert "dataset_owner" not in got["configuration"]["engine"]
    # alice has no `u1--ner`; bob's broken `u1--bad` is named as he named it in the error
    d = _detail(client.post("/felix/training-jobs", headers=alice, json=spec(datasets=[{"name": "u1--ner"}])))
    assert d[("body", "datasets", 0, "name")]["type"] == "dataset_not_found"
    assert "'u1--ner'" in d[("body", "datasets", 0, "name")]["msg"]
    upload(client, bob, name="u1--bad", content=b"not json\n")
    d = _detail(client.post("/felix/training-jobs", headers=bob, json=spec(datasets=[{"name": "u1--bad"}])))
    assert d[("body", "datasets", 0, "name")]["type"] == "dataset_not_ready"
    assert "'u1--bad'" in d[("body", "datasets", 0, "name")]["msg"]
    d = _detail(client.post("/felix/training-jobs", headers=bob, json=spec(engine={"dataset_owner": 1})))
    assert d[("body", "engine", "dataset_owner")]["type"] == "service_managed"


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    for name, value in {"HOME": str(tmp_path / "h"), "DATABASE_URL": "sqlite://", "SECRET_KEY": "k",
                        "PUBLIC_URL": "https://felix.example", "RATE_LIMIT_PER_MINUTE": "5"}.items():
        monkeypatch.setenv(f"FELIX_{name}", value)
    s = Settings.from_env(home=None, database_url=None, public_url=None)
    assert (s.home, s.database_url, s.secret_key, s.public_url) == (tmp_path / "h", "sqlite://", "k",
                                                                    "https://felix.example")
    assert s.rate_limit_per_minute == 5 and s.download_ttl_s == 3600 and s.max_upload_bytes == 1 << 30
    s = Settings.from_env(home="~/other", database_url="sqlite:///x.db")
    assert s.home == Path("~/other").expanduser() and s.database_url == "sqlite:///x.db"
    monkeypatch.setenv("FELIX_RATE_LIMIT_PER_MINUTE", "")
    assert Settings().rate_limit_per_minute == 20


# -- creating and listing jobs ---------------------------------------------------------------------------


def test_create_job(client, alice, store):
    upload(client, alice)
    r = client.post("/felix/training-jobs", headers=alice, json=spec(project_id="p1"))
    assert r.status_code == 201
    job = r.json()
    assert job["status"] == "requested" and job["project_id"] == "p1" and "metrics" not in job
    conf = job["configuration"]
    assert conf["datasets"] == [{"name": "ner"}] and conf["num_epochs"] == 3 and conf["training_type"] == "lora"
    assert conf["learning_rate"] == 2e-3 and job["name"].startswith("tiny-gliner2-sft-")
    stored = store.get_job(job_id=job["id"]).spec
    assert stored["datasets"] == [{"name": "ner"}] and stored["engine"]["dataset_owner"] == 1
    assert stored["engine"]["job_id"] == job["id"]
    assert client.get(f"/felix/training-jobs/{job['id']}", headers=alice).json() == job


def _detail(r) -> dict:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e for e in r.json()["detail"]}


def test_create_job_422_locates_every_error(client, alice):
    upload(client, alice)
    d = _detail(client.post("/felix/training-jobs", headers=alice, json=spec(learning_rat=0.1)))
    assert d[("body", "learning_rat")]["type"] == "extra_forbidden"
    assert "did you mean `learning_rate`" in d[("body", "learning_rat")]["msg"]

    d = _detail(client.post("/felix/training-jobs", headers=alice,
                            json=spec(datasets=[{"name": "ner"}, {"name": "nope"}], rl_config={"beta": 0.1},
                                      training_type="full", base_model="felix/tiny-llm")))
    assert d[("body", "datasets", 1, "name")]["type"] == "dataset_not_found"
    assert "'nope'" in d[("body", "datasets", 1, "name")]["msg"] and "u1--" not in json.dumps(list(d.values()))
    assert d[("body", "rl_config")]["type"] == "rl_config_forbidden"
    assert d[("body", "training_type")]["type"] == "training_type_not_allowed"

    d = _detail(client.post("/felix/training-jobs", headers=alice, json=spec(base_model="fastino/gliner2-bse-v1")))
    assert "did you mean `fastino/gliner2-base-v1`" in d[("body", "base_model")]["msg"]

    d = _detail(client.post("/felix/training-jobs", headers=alice,
                            json=spec(engine={"home": "/etc", "job_id": "x", "distributed": {"config": "/x"}})))
    assert {k for k, v in d.items() if v["type"] == "service_managed"} == {
        ("body", "engine", "home"), ("body", "engine", "job_id"), ("body", "engine", "distributed", "config")}

    d = _detail(client.post("/felix/training-jobs", headers=alice, json={"datasets": []}))
    assert d[("body", "base_model")]["type"] == "missing" and d[("body", "datasets")]["type"] == "too_short"

    d = _detail(client.post("/felix/training-jobs", headers=alice, json=[1, 2]))
    assert d[("body",)]["type"] == "model_type"

    r = client.post("/felix/training-jobs", headers={**alice, "Content-Type": "application/json"}, content=b"{oops")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"


def test_create_job_needs_ready_datasets(client, alice):
    upload(client, alice, name="broken", content=b"not json\n")
    d = _detail(client.post("/felix/training-jobs", headers=alice, json=spec(datasets=[{"name": "broken"}])))
    err = d[("body", "datasets", 0, "name")]
    assert err["type"] == "dataset_not_ready" and "'broken'" in err["msg"] and "u1--" not in err["msg"]


def test_rate_limit_is_20_per_minute_per_user(client, alice, bob):
    for _ in range(20):
        assert client.post("/felix/training-jobs", headers=alice, json={}).status_code == 422
    r = client.post("/felix/training-jobs", headers=alice, json={})
    assert r.status_code == 429 and "20" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert client.post("/felix/training-jobs", headers=bob, json={}).status_code == 422
    assert client.get("/felix/training-jobs", headers=alice).status_code == 200  # only submissions count


def test_list_filters_and_bounds(client, alice, store):
    upload(client, alice)
    ids = [submit(client, alice, project_id="a" if i < 2 else "b")["id"] for i in range(3)]
    store.set_status(job_id=ids[0], status=JobStatus.FAILED)
    page = client.get("/felix/training-jobs", headers=alice).json()
    assert page["count"] == 3 and [j["id"] for j in page["data"]] == ids[::-1]
    page = client.get("/felix/training-jobs?limit=1&offset=1", headers=alice).json()
    assert page["count"] == 3 and [j["id"] for j in page["data"]] == [ids[1]]
    assert client.get("/felix/training-jobs?project_id=a", headers=alice).json()["count"] == 2
    assert client.get("/felix/training-jobs?status=failed", headers=alice).json()["count"] == 1
    assert client.get("/felix/training-jobs?status=requested&project_id=b", headers=alice).json()["count"] == 1
    assert client.get("/felix/training-jobs?limit=200", headers=alice).status_code == 200
    for query, loc in [("limit=0", "limit"), ("limit=201", "limit"), ("offset=-1", "offset"),
                       ("status=done", "status"), ("limit=x", "limit"), ("project_id=../x", "project_id")]:
        r = client.get(f"/felix/training-jobs?{query}", headers=alice)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", loc], query


# -- a job's life -------------------------------------------------------------------------------------------


def test_metrics_only_when_complete(client, alice, complete_job, store):
    assert complete_job["metrics"] == {"loss": 0.25, "eval_f1": 0.5}
    assert complete_job["progress"]["step"] == 4 and complete_job["finished_at"]
    listed = client.get("/felix/training-jobs", headers=alice).json()["data"]
    assert listed[0]["metrics"] == complete_job["metrics"]
    store.set_status(job_id=complete_job["id"], status=JobStatus.DEPLOYED)
    assert "metrics" not in client.get(f"/felix/training-jobs/{complete_job['id']}", headers=alice).json()
    other = submit(client, alice)
    assert "metrics" not in client.get(f"/felix/training-jobs/{other['id']}", headers=alice).json()


def test_logs_whole_and_followed(client, alice, worker, felix_home):
    upload(client, alice)
    fake_options(felix_home, "slow", steps=6, step_s=0.1)
    job = submit(client, alice, name="slow")
    assert client.get(f"/felix/training-jobs/{job['id']}/logs", headers=alice).text == ""
    runner = threading.Thread(target=worker.drain, kwargs={"timeout_s": 30})
    runner.start()
    try:
        chunks = []
        with client.stream("GET", f"/felix/training-jobs/{job['id']}/logs?follow=true", headers=alice) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            for chunk in r.iter_text():
                chunks.append(chunk)
    finally:
        runner.join()
    assert len(chunks) > 1  # streamed while running, not once at the end
    text = "".join(chunks)
    assert "step 1/6" in text and "step 6/6" in text and text.rstrip().endswith("job complete")
    whole = client.get(f"/felix/training-jobs/{job['id']}/logs", headers=alice)
    assert whole.text == text and whole.headers["content-type"].startswith("text/plain")


def test_checkpoints_and_continuing_from_one(client, alice, bob, complete_job):
    r = client.get(f"/felix/training-jobs/{complete_job['id']}/checkpoints", headers=alice)
    assert r.status_code == 200
    page = r.json()
    assert page["count"] == 2 and [c["step"] for c in page["data"]] == [3, 4]  # keep_last 2
    uuid = page["data"][-1]["uuid"]
    assert page["data"][-1]["base_model"] == "felix/tiny-gliner2"
    follow_up = submit(client, alice, base_model=uuid)
    assert follow_up["base_model"] == uuid
    # bob cannot train from alice's checkpoint: to him it does not exist
    upload(client, bob)
    d = _detail(client.post("/felix/training-jobs", headers=bob, json=spec(base_model=uuid)))
    err = d[("body", "base_model")]
    assert err["type"] == "unknown_checkpoint" and uuid in err["msg"] and "/" not in err["msg"].split(":")[0]
    d = _detail(client.post("/felix/training-jobs", headers=bob, json=spec(
        base_model="00000000-0000-4000-8000-000000000000")))
    assert d[("body", "base_model")]["type"] == "unknown_checkpoint"


def test_download(client, alice, complete_job, app):
    job_id = complete_job["id"]
    r = client.get(f"/felix/training-jobs/{job_id}/download", headers=alice)
    assert r.status_code == 200
    url = r.json()["url"]
    assert r.json()["format"] == "zip" and url.startswith("http://testserver/felix/training-jobs/")
    got = client.get(url)  # no API key needed: the token is the credential
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    assert sorted(names) == ["model/config.json", "model/weights.bin"]
    assert client.get(url, headers=alice).status_code == 200

    r = client.get(f"/felix/training-jobs/{job_id}/download?format=tar.gz", headers=alice)
    got = client.get(r.json()["url"])
    with tarfile.open(fileobj=io.BytesIO(got.content), mode="r:gz") as tf:
        assert sorted(tf.getnames()) == ["model/config.json", "model/weights.bin"]

    token = parse_qs(urlsplit(url).query)["token"][0]
    path = urlsplit(url).path
    payload, sig = token.split(".")
    tampered = [f"{payload}.{sig[:-2]}AA", f"{payload[:-2]}AA.{sig}", "garbage", f"{payload}.", ""]
    for bad in tampered:
        assert client.get(path, params={"token": bad}).status_code == 404, bad
    expired = make_download_token(app.state.secret, job_id=job_id, user_id=1, fmt="zip", expires_at=time.time() - 1)
    r = client.get(path, params={"token": expired})
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    forged = make_download_token(b"not-the-secret", job_id=job_id, user_id=1, fmt="zip", expires_at=time.time() + 99)
    assert client.get(path, params={"token": forged}).status_code == 404
    assert client.get(path).status_code == 422  # token is required


def test_download_is_409_unless_complete(client, alice, store):
    upload(client, alice)
    job = submit(client, alice)
    for status in (JobStatus.REQUESTED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED):
        store.set_status(job_id=job["id"], status=status)
        r = client.get(f"/felix/training-jobs/{job['id']}/download", headers=alice)
        assert r.status_code == 409 and f"`{status.value}`" in r.json()["detail"]


def test_stop(client, alice, worker, felix_home, complete_job):
    fake_options(felix_home, "hang", steps=5, hang_at_step=2)
    job = submit(client, alice, name="hang")
    r = client.post(f"/felix/training-jobs/{job['id']}/stop", headers=alice)
    assert r.status_code == 409 and "`requested`" in r.json()["detail"]
    _run_until(worker, lambda: client.get(f"/felix/training-jobs/{job['id']}", headers=alice)
               .json()["progress"]["step"] == 2)
    r = client.post(f"/felix/training-jobs/{job['id']}/stop", headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["stop_requested"] is True
    worker.drain(timeout_s=20)
    got = client.get(f"/felix/training-jobs/{job['id']}", headers=alice).json()
    assert got["status"] == "cancelled" and got["stop_requested"] is False
    assert "stopped on request" in client.get(f"/felix/training-jobs/{job['id']}/logs", headers=alice).text
    assert client.get(f"/felix/training-jobs/{job['id']}/checkpoints", headers=alice).json()["count"] >= 1
    for done in (job["id"], complete_job["id"]):
        assert client.post(f"/felix/training-jobs/{done}/stop", headers=alice).status_code == 409


def test_delete(client, alice, complete_job, felix_home, store):
    job_id = complete_job["id"]
    folder = JobFolder(job_id, felix_home).root
    assert (folder / "checkpoints").is_dir() and (folder / "train.log").exists()
    client.get(f"/felix/training-jobs/{job_id}/download", headers=alice)
    r = client.delete(f"/felix/training-jobs/{job_id}", headers=alice)
    assert r.status_code == 200
    assert r.json()["success"] is True and job_id in r.json()["message"]
    assert not folder.exists()
    for path in ("", "/logs", "/checkpoints", "/download"):
        assert client.get(f"/felix/training-jobs/{job_id}{path}", headers=alice).status_code == 404
    assert client.delete(f"/felix/training-jobs/{job_id}", headers=alice).status_code == 404

    running = submit(client, alice)
    store.set_status(job_id=running["id"], status=JobStatus.RUNNING)
    r = client.delete(f"/felix/training-jobs/{running['id']}", headers=alice)
    assert r.status_code == 409 and "stop it first" in r.json()["detail"]


def test_trained_models(client, alice, complete_job):
    submit(client, alice)  # queued: not a trained model
    r = client.get("/felix/trained-models", headers=alice)
    assert r.status_code == 200
    page = r.json()
    assert page["count"] == 1
    model = page["data"][0]
    assert model["id"] == complete_job["id"] and model["base_model"] == "felix/tiny-gliner2"
    assert model["metrics"] == complete_job["metrics"] and len(model["checkpoints"]) == 2
    assert model["download"] == f"/felix/training-jobs/{complete_job['id']}/download"


# -- isolation ---------------------------------------------------------------------------------------------


def test_another_users_resources_are_not_found(client, alice, bob, complete_job, felix_home):
    job_id = complete_job["id"]
    url = client.get(f"/felix/training-jobs/{job_id}/download", headers=alice).json()["url"]
    for method, path in [("get", ""), ("get", "/logs"), ("get", "/logs?follow=true"), ("get", "/checkpoints"),
                         ("get", "/download"), ("get", "/download?format=tar.gz"), ("post", "/stop"),
                         ("delete", "")]:
        r = getattr(client, method)(f"/felix/training-jobs/{job_id}{path}", headers=bob)
        assert r.status_code == 404, (method, path, r.status_code)
    # alice's download URL presented with bob's key
    assert client.get(url, headers=bob).status_code == 404
    # bob's own valid token does not open alice's job
    upload(client, bob)
    bob_job = submit(client, bob, name="bobs")
    token = parse_qs(urlsplit(url).query)["token"][0]
    assert client.get(f"/felix/training-jobs/{bob_job['id']}/download/file", params={"token": token}).status_code == 404
    # datasets: bob's names are his own
    upload(client, alice, name="secret-set")
    assert client.get("/felix/datasets/secret-set", headers=bob).status_code == 404
    d = _detail(client.post("/felix/training-jobs", headers=bob, json=spec(datasets=[{"name": "secret-set"}])))
    assert d[("body", "datasets", 0, "name")]["type"] == "dataset_not_found"
    assert {x["name"] for x in client.get("/felix/datasets", headers=bob).json()["data"]} >= {"ner"}
    assert "secret-set" not in {x["name"] for x in client.get("/felix/datasets", headers=bob).json()["data"]}
    # listings
    assert [j["id"] for j in client.get("/felix/training-jobs", headers=bob).json()["data"]] == [bob_job["id"]]
    assert client.get("/felix/trained-models", headers=bob).json()["count"] == 0
    # alice's job is untouched
    assert client.get(f"/felix/training-jobs/{job_id}", headers=alice).json()["status"] == "complete"
    assert JobFolder(job_id, felix_home).root.exists()


@pytest.mark.parametrize("job_id", ["..", "..%2F..%2Fetc", "job-1%00", "a" * 65, ".hidden", "x y"])
def test_malformed_ids_are_not_found(client, alice, job_id):
    for path in ("", "/logs", "/checkpoints", "/download"):
        assert client.get(f"/felix/training-jobs/{job_id}{path}", headers=alice).status_code == 404


# -- the API never loads torch -----------------------------------------------------------------------------


def test_the_api_never_imports_torch(tmp_path):
    script = f"""
import io, json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from felix_train.service.api import Settings, create_app
app = create_app(Settings(home=Path({str(tmp_path)!r}), secret_key="k"))
_, key = app.state.store.create_user(name="u")
h = {{"Authorization": "Bearer " + key}}
with TestClient(app) as c:
    data = {GOOD_JSONL!r}
    assert c.post("/felix/datasets", headers=h, data={{"name": "ner"}}, files={{"file": ("a.jsonl", io.BytesIO(data))}}).status_code == 202
    body = {{"base_model": "felix/tiny-gliner2", "datasets": [{{"name": "ner"}}]}}
    job = c.post("/felix/training-jobs", headers=h, json=body).json()
    c.post("/felix/training-jobs", headers=h, json={{"base_model": "felix/tiny-llm", "datasets": [{{"name": "ner"}}],
           "training_algorithm": "grpo", "rl_config": {{"reward_type": "numeric_match"}}}})
    for path in ("/felix/training-jobs", "/felix/training-jobs/" + job["id"], "/felix/training-jobs/" + job["id"] + "/logs",
                 "/felix/training-jobs/" + job["id"] + "/checkpoints", "/felix/trained-models", "/base-models",
                 "/felix/datasets", "/openapi.json"):
        assert c.get(path, headers=h).status_code == 200, path
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "gliner2", "trl"))))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_importing_the_api_never_imports_torch():
    code = ("import sys; import felix_train.service.api; from felix_train.service.api import create_app; "
            "heavy = [m for m in ('torch', 'transformers', 'gliner2', 'trl') if m in sys.modules]; "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert out.returncode == 0, out.stderr
