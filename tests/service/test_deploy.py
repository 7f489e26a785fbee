"""`deployed`: deploy/undeploy/predict through the store, the CLI, the API and real inference processes.

The fast half drives the store (SQLite and PostgreSQL), the CLI and the API (TestClient) on
jobs recorded `complete`. The end-to-end half starts a real API server and a real worker,
trains `felix/tiny-gliner2` and a `felix/tiny-llm` SFT job, deploys both over HTTP, checks that
`predict` answers exactly what the downloaded weights answer when loaded with `GLiNER2.from_pretrained`
/ `PeftModel.from_pretrained`, kills an inference process, and undeploys.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from felix_train import cli
from felix_train.errors import JobNotFound
from felix_train.jobs import JobFolder, JobStatus, atomic_write_json
from felix_train.service.api import Settings, create_app
from felix_train.service.store import Conflict, Store
from felix_train.service.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
GLINER = "felix/tiny-gliner2"
LLM = "felix/tiny-llm"
DEPLOYMENT_COLUMNS = ["deploy_requested", "deployment_id", "serving_worker", "serving_pid", "serving_port",
                      "serving_heartbeat_at"]


def complete_job(store: Store, home: Path, owner_id: int, base_model: str = GLINER, *, model: bool = True) -> str:
    """A job recorded `complete` (as a worker records a finished run), with its spec.json and model/ folder."""
    spec = {"base_model": base_model, "catalog_model": base_model, "datasets": [{"name": "ner"}],
            "training_type": "lora", "training_algorithm": "sft", "engine": {}}
    job = store.create_job(owner_id=owner_id, name="done", spec=spec)
    store.set_status(job_id=job.id, status=JobStatus.COMPLETE)
    folder = JobFolder(job.id, home)
    folder.create()
    atomic_write_json(folder.spec_path, spec)
    atomic_write_json(folder.status_path, {"id": job.id, "status": "complete"})
    if model:
        folder.model_dir.mkdir()
    return job.id


# -- the store (SQLite and PostgreSQL) -----------------------------------------------------------------------


def test_deploy_lifecycle_in_the_store(store, felix_home):
    alice, _ = store.create_user(name="alice")
    queued = store.create_job(owner_id=alice.id, name="q", spec={"base_model": GLINER})
    with pytest.raises(Conflict, match="only a `complete` job can be deployed"):
        store.request_deploy(job_id=queued.id, owner_id=alice.id)
    job_id = complete_job(store, felix_home, alice.id)
    with pytest.raises(Conflict, match="not deployed"):
        store.request_undeploy(job_id=job_id, owner_id=alice.id)

    job = store.request_deploy(job_id=job_id, owner_id=alice.id)
    assert (job.status, job.deploy_requested, job.deployment_id) == (JobStatus.COMPLETE, True, None)
    assert store.request_deploy(job_id=job_id, owner_id=None).deploy_requested  # idempotent while pending
    claimed = store.claim_deployment(worker_id="w1")
    assert claimed is not None and claimed.job_id == job_id and claimed.owner_id == alice.id
    assert store.claim_deployment(worker_id="w2") is None  # one worker per deployment
    assert store.set_serving_pid(job_id=job_id, deployment_id=claimed.deployment_id, pid=4242)
    assert store.get_job(job_id=job_id).status == JobStatus.COMPLETE  # not before its health check
    assert store.mark_deployed(job_id=job_id, deployment_id=claimed.deployment_id, port=5555, pid=4242)
    job = store.get_job(job_id=job_id, owner_id=alice.id)
    assert (job.status, job.serving_port, job.serving_pid, job.serving_worker) == (JobStatus.DEPLOYED, 5555, 4242, "w1")
    with pytest.raises(Conflict, match="already `deployed`"):
        store.request_deploy(job_id=job_id, owner_id=alice.id)
    assert store.deployment_heartbeat(deployments={job_id: claimed.deployment_id}) == {job_id}
    assert store.deployment_heartbeat(deployments={job_id: "another-deployment"}) == set()

    job = store.request_undeploy(job_id=job_id, owner_id=alice.id)
    assert (job.status, job.deploy_requested, job.deployment_id, job.serving_port) == (JobStatus.COMPLETE, False,
                                                                                         None, None)
    # the withdrawn deployment's worker is fenced out of every write
    assert store.deployment_heartbeat(deployments={job_id: claimed.deployment_id}) == set()
    assert not store.mark_deployed(job_id=job_id, deployment_id=claimed.deployment_id, port=1, pid=1)
    assert not store.end_deployment(job_id=job_id, deployment_id=claimed.deployment_id)
    with pytest.raises(Conflict, match="not deployed"):
        store.request_undeploy(job_id=job_id, owner_id=alice.id)
    with pytest.raises(JobNotFound):
        store.request_deploy(job_id="job-nope", owner_id=alice.id)


def test_dead_processes_shutdowns_and_dead_workers(store, felix_home):
    alice, _ = store.create_user(name="alice")
    bob, _ = store.create_user(name="bob")
    job_id = complete_job(store, felix_home, alice.id)
    with pytest.raises(JobNotFound):  # another user's job does not exist for bob
        store.request_deploy(job_id=job_id, owner_id=bob.id)
    store.request_deploy(job_id=job_id, owner_id=alice.id)

    # the process died: complete, and not redeployed
    first = store.claim_deployment(worker_id="w1")
    assert store.mark_deployed(job_id=job_id, deployment_id=first.deployment_id, port=5555, pid=1)
    assert store.end_deployment(job_id=job_id, deployment_id=first.deployment_id)
    job = store.get_job(job_id=job_id)
    assert (job.status, job.deploy_requested, job.serving_worker) == (JobStatus.COMPLETE, False, None)
    assert store.claim_deployment(worker_id="w1") is None

    # the worker shut down: complete, and another worker deploys it again
    store.request_deploy(job_id=job_id, owner_id=alice.id)
    second = store.claim_deployment(worker_id="w1")
    assert store.mark_deployed(job_id=job_id, deployment_id=second.deployment_id, port=5555, pid=1)
    assert store.end_deployment(job_id=job_id, deployment_id=second.deployment_id, keep_request=True)
    assert store.get_job(job_id=job_id).deploy_requested
    third = store.claim_deployment(worker_id="w2")
    assert third.job_id == job_id and third.deployment_id != second.deployment_id

    # the worker died: once its heartbeat is stale, any worker hands the deployment back
    assert store.mark_deployed(job_id=job_id, deployment_id=third.deployment_id, port=5556, pid=2)
    assert store.recover_stale_deployments(timeout_s=60) == {}
    with store.writing() as s:
        s.execute(text("UPDATE jobs SET serving_heartbeat_at = :t WHERE id = :id"),
                  {"t": "2000-01-01 00:00:00", "id": job_id})
    assert store.recover_stale_deployments(timeout_s=60) == {job_id: "w2"}
    job = store.get_job(job_id=job_id)
    assert (job.status, job.deploy_requested, job.deployment_id) == (JobStatus.COMPLETE, True, None)
    assert store.claim_deployment(worker_id="w3").job_id == job_id


def test_older_databases_get_the_deployment_columns(db_url, felix_home):
    """A database from before deployments (and before Alembic) gets the columns from migration 0002."""
    old = Store(db_url, home=felix_home)
    user, _ = old.create_user(name="alice")
    job = old.create_job(owner_id=user.id, name="old", spec={"base_model": GLINER})
    with old.writing() as s:
        for column in DEPLOYMENT_COLUMNS:
            s.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        s.execute(text("DROP TABLE alembic_version"))  # made before Alembic: no schema revision either
    old.close()
    store = Store(db_url, home=felix_home)
    try:
        got = store.get_job(job_id=job.id)
        assert got.name == "old" and got.deploy_requested is False and got.deployment_id is None
        store.set_status(job_id=job.id, status=JobStatus.COMPLETE)
        assert store.request_deploy(job_id=job.id, owner_id=user.id).deploy_requested
    finally:
        store.close()


# -- the CLI -----------------------------------------------------------------------------------------------------


def test_jobs_deploy_and_undeploy_cli(felix_home, capsys):
    store = Store(home=felix_home)
    try:
        user, _ = store.create_user(name="ops")
        job_id = complete_job(store, felix_home, user.id)
        queued = store.create_job(owner_id=user.id, name="q", spec={"base_model": GLINER}).id
        home = ["jobs", "--home", str(felix_home)]
        assert cli.main([*home, "deploy", job_id]) == 0
        assert "deploy requested" in capsys.readouterr().out
        assert store.get_job(job_id=job_id).deploy_requested
        assert cli.main([*home, "undeploy", job_id]) == 0
        assert not store.get_job(job_id=job_id).deploy_requested
        assert cli.main([*home, "undeploy", job_id]) == 1
        assert cli.main([*home, "deploy", queued]) == 1
        assert cli.main([*home, "deploy", "job-nope"]) == 1
        assert "only a `complete` job" in capsys.readouterr().err
    finally:
        store.close()


# -- the API (TestClient) -----------------------------------------------------------------------------------------


@pytest.fixture
def app(felix_home):
    return create_app(Settings(home=felix_home, database_url=f"sqlite:///{felix_home / 'felix.db'}", secret_key="k"))


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def _user(store: Store, name: str) -> tuple[int, dict]:
    user, key = store.create_user(name=name)
    return user.id, {"Authorization": f"Bearer {key}"}


def test_deploy_undeploy_and_predict_errors(client, app, felix_home):
    store = app.state.store
    uid, alice = _user(store, "alice")
    queued = store.create_job(owner_id=uid, name="q", spec={"base_model": GLINER}).id
    r = client.post(f"/felix/training-jobs/{queued}/deploy", headers=alice)
    assert r.status_code == 409 and "`requested`" in r.json()["detail"]
    gliner, llm = complete_job(store, felix_home, uid), complete_job(store, felix_home, uid, LLM)
    no_model = complete_job(store, felix_home, uid, model=False)
    assert client.post(f"/felix/training-jobs/{no_model}/deploy", headers=alice).status_code == 409

    good = {"text": "Alice works at Acme.", "entities": ["person", "company"]}
    r = client.post(f"/felix/trained-models/{gliner}/predict", headers=alice, json=good)
    assert r.status_code == 409 and "not `deployed`" in r.json()["detail"]
    assert client.post(f"/felix/training-jobs/{gliner}/undeploy", headers=alice).status_code == 409

    r = client.post(f"/felix/training-jobs/{gliner}/deploy", headers=alice)
    assert r.status_code == 202 and r.json()["status"] == "complete" and r.json()["deploy_requested"] is True
    assert client.post(f"/felix/training-jobs/{gliner}/deploy", headers=alice).status_code == 202
    r = client.post(f"/felix/trained-models/{gliner}/predict", headers=alice, json=good)
    assert r.status_code == 409 and "starting" in r.json()["detail"]
    models = {m["id"]: m for m in client.get("/felix/trained-models", headers=alice).json()["data"]}
    assert models[gliner]["deploy_requested"] and models[gliner]["predict"] == f"/felix/trained-models/{gliner}/predict"
    store.set_status(job_id=llm, status=JobStatus.DEPLOYED)  # a deployed model is still a trained model
    models = {m["id"]: m for m in client.get("/felix/trained-models", headers=alice).json()["data"]}
    assert models[llm]["status"] == "deployed" and set(models) == {gliner, llm, no_model}
    store.set_status(job_id=llm, status=JobStatus.COMPLETE)
    r = client.post(f"/felix/training-jobs/{gliner}/undeploy", headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "complete" and r.json()["deploy_requested"] is False

    # bad bodies: 422 naming the field, checked before the 409 (every problem at once)
    def errors(job_id, body):
        r = client.post(f"/felix/trained-models/{job_id}/predict", headers=alice, json=body)
        assert r.status_code == 422, r.text
        return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}

    assert ("body", "text") in errors(gliner, {"entities": ["person"]})
    assert ("body", "texts") in errors(gliner, {"text": "a", "texts": ["b"], "entities": ["person"]})
    assert ("body", "entities") in errors(gliner, {"text": "a"})
    assert ("body", "schema") in errors(gliner, {"text": "a", "entities": ["x"], "schema": {"entities": ["x"]}})
    got = errors(gliner, {"text": "a", "entities": ["person"], "threshold": 2, "labels": ["x"]})
    assert ("body", "threshold") in got and "unknown field `labels`" in got[("body", "labels")]
    assert ("body", "texts", 1) in errors(gliner, {"texts": ["ok", "  "], "entities": ["person"]})
    assert ("body", "entities") in errors(gliner, {"text": "a", "entities": ["x", "x"]})
    assert ("body", "messages") in errors(llm, {"max_new_tokens": 8})
    assert ("body", "messages", 0, "role") in errors(llm, {"messages": [{"role": "robot", "content": "hi"}]})
    assert ("body", "max_new_tokens") in errors(llm, {"prompt": "hi", "max_new_tokens": 0})
    assert ("body", "text") in errors(llm, {"prompt": "hi", "text": "a GLiNER2 field"})
    r = client.post(f"/felix/trained-models/{llm}/predict", headers=alice, json={"prompt": "hi"})
    assert r.status_code == 409


def test_another_users_model_is_not_found(client, app, felix_home):
    store = app.state.store
    uid, alice = _user(store, "alice")
    _, bob = _user(store, "bob")
    job_id = complete_job(store, felix_home, uid)
    body = {"text": "Alice works at Acme.", "entities": ["person"]}
    for who, expected in ((bob, 404), (alice, 202)):
        assert client.post(f"/felix/training-jobs/{job_id}/deploy", headers=who).status_code == expected
    for path, kwargs in ((f"/felix/training-jobs/{job_id}/deploy", {}), (f"/felix/training-jobs/{job_id}/undeploy", {}),
                         (f"/felix/trained-models/{job_id}/predict", {"json": body}),
                         ("/felix/trained-models/job-nope/predict", {"json": body}),
                         ("/felix/trained-models/..%2Fetc/predict", {"json": body})):
        assert client.post(path, headers=bob, **kwargs).status_code == 404, path
    assert client.post(f"/felix/trained-models/{job_id}/predict", json=body).status_code == 401
    assert store.get_job(job_id=job_id).deploy_requested  # bob's undeploy did nothing


def test_the_api_never_imports_torch_when_deploying(tmp_path):
    script = f"""
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from felix_train.jobs import JobStatus
from felix_train.service.api import Settings, create_app
app = create_app(Settings(home=Path({str(tmp_path)!r}), secret_key="k"))
store = app.state.store
user, key = store.create_user(name="u")
h = {{"Authorization": "Bearer " + key}}
ids = []
for base in ("felix/tiny-gliner2", "felix/tiny-llm"):
    job = store.create_job(owner_id=user.id, name="j", spec={{"base_model": base, "catalog_model": base}})
    store.set_status(job_id=job.id, status=JobStatus.COMPLETE)
    (Path({str(tmp_path)!r}) / "jobs" / job.id / "model").mkdir(parents=True)
    ids.append(job.id)
with TestClient(app) as c:
    for job_id in ids:
        assert c.post(f"/felix/training-jobs/{{job_id}}/deploy", headers=h).status_code == 202
        assert c.post(f"/felix/trained-models/{{job_id}}/predict", headers=h, json={{}}).status_code == 422
        assert c.post(f"/felix/trained-models/{{job_id}}/predict", headers=h,
                      json={{"text": "a", "entities": ["x"], "prompt": "a"}}).status_code == 422
        assert c.post(f"/felix/training-jobs/{{job_id}}/undeploy", headers=h).status_code == 200
    assert c.post(f"/felix/trained-models/{{ids[0]}}/predict", headers=h,
                  json={{"text": "a", "entities": ["x"]}}).status_code == 409
    assert c.get("/openapi.json").status_code == 200
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "gliner2", "peft"))))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# -- a worker with a real inference process that cannot load its model ---------------------------------------------


def test_a_deployment_that_never_becomes_healthy(felix_home):
    store = Store(home=felix_home)
    worker = Worker(store, home=felix_home, poll_s=0.05, heartbeat_timeout_s=5, max_deployments=2)
    try:
        user, _ = store.create_user(name="alice")
        broken = complete_job(store, felix_home, user.id, LLM)  # model/ is empty: nothing to load
        store.request_deploy(job_id=broken, owner_id=user.id)
        worker.tick()
        assert broken in worker.serving and store.get_job(job_id=broken).serving_pid == worker.serving[broken].proc.pid
        deadline = time.monotonic() + 60
        while store.get_job(job_id=broken).deploy_requested:
            assert time.monotonic() < deadline, "the broken deployment never ended"
            worker.tick()
            time.sleep(0.05)
        job = store.get_job(job_id=broken)
        assert job.status == JobStatus.COMPLETE and job.deployment_id is None and not worker.serving
        log = JobFolder(broken, felix_home).log_path.read_text()
        assert "deploy failed: the inference process" in log and "before it answered its health check" in log
        assert "holds neither a PEFT adapter" in log  # the tail of serving.log says why

        # a worker that stops hands its deployments back (here: one still loading)
        store.request_deploy(job_id=broken, owner_id=user.id)
        worker.tick()
        proc = worker.serving[broken].proc
        worker.shutdown()
        worker.tick()
        assert proc.poll() is not None and not worker.serving
        job = store.get_job(job_id=broken)
        assert job.status == JobStatus.COMPLETE and job.deploy_requested and job.deployment_id is None
        assert "the deployment waits for another worker" in JobFolder(broken, felix_home).log_path.read_text()
    finally:
        for srv in worker.serving.values():
            srv.proc.kill()
        store.close()


# -- end to end: real API server, real worker, real inference processes -------------------------------------------

HAVE_MODELS = (importlib.util.find_spec("gliner2") is not None
               and importlib.util.find_spec("felix_train.trainers.gliner2") is not None
               and importlib.util.find_spec("felix_train.trainers.sft") is not None)
e2e = pytest.mark.skipif(not HAVE_MODELS, reason="gliner2 or the GLiNER2/SFT trainers are not in this build")

GLINER_LABELS = ["person", "organization", "location"]
TEXTS = ["Alice Martin joined Globex in Paris.", "Bob Chen left Initech and moved to Lagos.",
         "The bakery on the corner makes the best bread in town.", "Carla Diaz presented the results in Osaka.",
         "Emeka Obi founded Umbrella Labs in Toronto last spring."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FELIX_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, *args], env=env, cwd=str(ROOT), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its worker) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def live(model_store, tmp_path_factory):
    """An API server and a worker (training 2 jobs at once) on a fresh store; both tiny jobs trained and deploying."""
    httpx = pytest.importorskip("httpx")
    tmp = tmp_path_factory.mktemp("deploy-e2e")
    home = model_store
    db_url = f"sqlite:///{tmp / 'felix.db'}"
    store = Store(db_url, home=home)
    _, alice_key = store.create_user(name="alice")
    _, bob_key = store.create_user(name="bob")
    port = _free_port()
    server = _spawn(["-m", "felix_train.service.api", "--host", "127.0.0.1", "--port", str(port), "--home", str(home),
                     "--database-url", db_url, "--log-level", "warning"], home, tmp / "server.log")
    worker = _spawn(["-m", "felix_train.service.worker", "--home", str(home), "--database-url", db_url, "--poll", "0.1",
                     "--concurrency", "2", "--heartbeat-timeout", "10", "--worker-id", "deploy-worker"],
                    home, tmp / "worker.log")
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {alice_key}"}, timeout=60)
    bob = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {bob_key}"}, timeout=60)

    def up() -> bool:
        try:
            return http.get("/base-models").status_code == 200
        except httpx.TransportError:
            return False

    def job(job_id: str) -> dict:
        return http.get(f"/felix/training-jobs/{job_id}").json()

    def wait_status(job_id: str, status: str, timeout_s: float = 90) -> dict:
        try:
            return _wait(lambda: (j := job(job_id))["status"] == status and j, timeout_s, f"{job_id} to be {status}")
        except AssertionError:
            raise AssertionError(f"{job(job_id)}\n--- train.log\n{http.get(f'/felix/training-jobs/{job_id}/logs').text[-3000:]}"
                                 f"\n--- worker.log\n{(tmp / 'worker.log').read_text()[-3000:]}") from None

    try:
        _wait(up, 30, "the API server")
        engine = {"max_steps": 10, "save_steps": 10, "logging_steps": 5, "batch_size": 4, "report_to": [],
                  "eval": {"fraction": 0}}
        jobs = {}
        for key, body in (("gliner", {"base_model": GLINER, "datasets": [{"name": "felix-ner-quickstart"}],
                                      "engine": {**engine, "max_steps": 60, "save_steps": 60}}),
                          ("llm", {"base_model": LLM, "datasets": [{"name": "felix-chat-mini"}], "learning_rate": 1e-2,
                                   "engine": {**engine, "max_length": 128}})):
            r = http.post("/felix/training-jobs", json=body)
            assert r.status_code == 201, r.text
            jobs[key] = r.json()["id"]
        downloads = {}
        for key in ("gliner", "llm"):  # deploy each as soon as it is trained (and downloaded): both start together
            wait_status(jobs[key], "complete", 120)
            downloads[key] = _download(http, jobs[key], tmp)
            assert http.post(f"/felix/training-jobs/{jobs[key]}/deploy").status_code == 202
        yield SimpleNamespace(http=http, bob=bob, store=store, home=home, tmp=tmp, server=server, worker=worker,
                              job=job, wait_status=wait_status, downloads=downloads, **jobs)
    finally:
        http.close()
        bob.close()
        worker_rc, server_rc = _stop(worker), _stop(server)
        store.close()
    assert worker_rc == 0, (tmp / "worker.log").read_text()[-3000:]
    assert server_rc in (0, -signal.SIGTERM), (tmp / "server.log").read_text()[-3000:]


def _download(http, job_id: str, tmp: Path) -> Path:
    """The job's weights through the download URL (a `complete` job's), unpacked."""
    import httpx

    url = http.get(f"/felix/training-jobs/{job_id}/download").json()["url"]
    out = tmp / f"download-{job_id}"
    zipfile.ZipFile(io.BytesIO(httpx.get(url, timeout=60).content)).extractall(out)
    return out / "model"


def _json(obj):
    return json.loads(json.dumps(obj))


@e2e
def test_gliner2_deploy_predict_kill_undeploy(live):
    http, job_id = live.http, live.gliner
    model_dir = live.downloads["gliner"]
    deployed = live.wait_status(job_id, "deployed")
    assert deployed["deploy_requested"] is True and "metrics" not in deployed
    # the job's events (issue 20): its training ended complete, then the worker told the deployment
    events = _wait(lambda: http.get(f"/felix/training-jobs/{job_id}/events", params={"type": "deployed"}
                                    ).json()["data"], 30, "a deployed event")
    assert events[0]["data"]["status"] == "deployed" and events[0]["data"]["deployment_id"]
    statuses = [e["data"]["status"] for e in http.get(f"/felix/training-jobs/{job_id}/events", params={
        "type": "status_changed", "limit": 1000}).json()["data"]]
    assert statuses[:2] == ["running", "complete"] and "deployed" in statuses

    # isolation: bob cannot see, use, or stop alice's deployed model
    body = {"text": TEXTS[0], "entities": GLINER_LABELS, "threshold": 0.01}
    for path in (f"/felix/training-jobs/{job_id}/deploy", f"/felix/training-jobs/{job_id}/undeploy",
                 f"/felix/trained-models/{job_id}/predict"):
        assert live.bob.post(path, json=body).status_code == 404, path
    assert live.job(job_id)["status"] == "deployed"

    from gliner2 import GLiNER2
    from gliner2.inference.schema import Schema

    layout = json.loads((model_dir / "felix_model.json").read_text())
    weights = next(f for f in layout["files"].values() if f["format"] == "gliner2")
    reference = GLiNER2.from_pretrained(str(model_dir / weights["path"]))

    # gliner2's own label-by-label answer when asked for it (`decoding: nested`) ...
    r = http.post(f"/felix/trained-models/{job_id}/predict",
                  json={**body, "include_confidence": True, "decoding": "nested"})
    assert r.status_code == 200, r.text
    got = r.json()
    expected = reference.extract_entities(TEXTS[0], GLINER_LABELS, threshold=0.01, include_confidence=True)
    assert got["result"] == _json(expected) and got["id"] == job_id and got["family"] == "gliner2"
    assert any(got["result"]["entities"].values()), got  # something was extracted: the comparison is not vacuous
    # ... and by default the model's saved decoding (flat here): no span under two labels
    assert layout.get("decoding") == "flat"
    flat = http.post(f"/felix/trained-models/{job_id}/predict", json={**body, "include_confidence": True}).json()
    texts = [m["text"] for ms in flat["result"]["entities"].values() for m in ms]
    assert texts and len(texts) == len(set(texts)) and len(texts) <= sum(map(len, expected["entities"].values()))

    r = http.post(f"/felix/trained-models/{job_id}/predict",
                  json={"texts": TEXTS, "entities": GLINER_LABELS, "threshold": 0.01, "batch_size": 2,
                        "decoding": "nested"})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == _json(reference.batch_extract_entities(TEXTS, GLINER_LABELS, batch_size=2,
                                                                         threshold=0.01))
    schema = {"entities": ["person", "location"],
              "classifications": [{"task": "topic", "labels": ["work", "food", "travel"]}]}
    r = http.post(f"/felix/trained-models/{job_id}/predict", json={"text": TEXTS[1], "schema": schema, "threshold": 0.1,
                                                                        "decoding": "nested"})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == _json(reference.extract(TEXTS[1], Schema.from_dict(schema), threshold=0.1))

    r = http.post(f"/felix/trained-models/{job_id}/predict", json={"text": "a", "schema": {"entities": []}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "schema", "entities"]  # from the process
    r = http.post(f"/felix/trained-models/{job_id}/predict", json={"texts": [], "entities": GLINER_LABELS})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "texts"]  # from the API

    maps = Path(f"/proc/{live.server.pid}/maps")
    if maps.exists():  # the API process routed every predict without loading torch
        assert "torch" not in maps.read_text()

    # kill the inference process: the job leaves `deployed`, and its log says why
    pid = live.store.get_job(job_id=job_id).serving_pid
    assert pid and _alive(pid)
    os.kill(pid, signal.SIGKILL)
    job = live.wait_status(job_id, "complete", 30)
    assert job["deploy_requested"] is False
    log = http.get(f"/felix/training-jobs/{job_id}/logs").text
    assert f"the inference process (pid {pid}) died (signal 9)" in log, log[-2000:]
    r = http.post(f"/felix/trained-models/{job_id}/predict", json=body)
    assert r.status_code == 409

    # deploy again, then undeploy: `complete` at once, and the process goes away
    assert http.post(f"/felix/training-jobs/{job_id}/deploy").status_code == 202
    live.wait_status(job_id, "deployed")
    pid = live.store.get_job(job_id=job_id).serving_pid
    assert http.post(f"/felix/trained-models/{job_id}/predict", json=body).status_code == 200
    r = http.post(f"/felix/training-jobs/{job_id}/undeploy")
    assert r.status_code == 200 and r.json()["status"] == "complete"
    assert http.post(f"/felix/trained-models/{job_id}/predict", json=body).status_code == 409
    _wait(lambda: "undeployed: worker deploy-worker stopped the inference process" in
          http.get(f"/felix/training-jobs/{job_id}/logs").text, 20, "the worker to stop the inference process")
    assert not _alive(pid)
    assert json.loads((live.home / "jobs" / job_id / "status.json").read_text())["status"] == "complete"


@e2e
def test_llm_deploy_predict_undeploy(live):
    http, job_id = live.http, live.llm
    model_dir = live.downloads["llm"]
    live.wait_status(job_id, "deployed")
    assert json.loads((live.home / "jobs" / job_id / "status.json").read_text())["status"] == "deployed"

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                          str(model_dir)).eval()

    def generate(ids: list[int], n: int) -> tuple[str, int]:
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            out = reference.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
        new = out[0][len(ids):]
        return tokenizer.decode(new, skip_special_tokens=True), len(new)

    messages = [{"role": "user", "content": "What is 48 minus 10?"}]
    r = http.post(f"/felix/trained-models/{job_id}/predict", json={"messages": messages, "max_new_tokens": 16})
    assert r.status_code == 200, r.text
    got = r.json()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    text_out, n = generate(list(ids), 16)
    assert (got["text"], got["usage"]["completion_tokens"]) == (text_out, n) and n > 0
    assert got["usage"]["prompt_tokens"] == len(ids) and got["finish_reason"] in ("stop", "length")

    r = http.post(f"/felix/trained-models/{job_id}/predict", json={"prompt": "The capital of France is",
                                                                   "max_new_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == generate(tokenizer("The capital of France is")["input_ids"], 8)[0]
    sampled = [http.post(f"/felix/trained-models/{job_id}/predict",
                         json={"prompt": "Hello", "max_new_tokens": 8, "temperature": 1.0, "seed": 3}).json()["text"]
               for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed makes sampling reproducible

    r = http.post(f"/felix/training-jobs/{job_id}/undeploy")
    assert r.status_code == 200 and r.json()["status"] == "complete"
    assert http.post(f"/felix/trained-models/{job_id}/predict", json={"prompt": "hi"}).status_code == 409
    assert http.post(f"/felix/training-jobs/{job_id}/undeploy").status_code == 409
