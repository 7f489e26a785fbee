"""Issue 16 #7: an inference process answers its deployment's API (and worker) only.

Each deployment gets a random secret (`felix_train.service.serving.auth`): the worker hands it to the
process in its environment and writes it, 0600, where the API reads it; the process refuses every request
without it (401, `/health` included), and `/health` shows no filesystem path. The last test deploys a tiny
LLM through a real worker and a real inference process: a local process without the secret gets 401, the
API (with it) gets the model's real answer.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from felix_train.catalog import ModelFamily
from felix_train.jobs import JobFolder, JobStatus, atomic_write_json
from felix_train.service.serving import SECRET_ENV, auth_headers, create_serving_app
from felix_train.service.serving.auth import (
    is_authorized,
    new_secret,
    read_deployment_secret,
    remove_deployment_secret,
    secret_path,
    write_deployment_secret,
)

ROOT = Path(__file__).resolve().parents[2]
LLM = "felix/tiny-llm"


# -- the secret file ---------------------------------------------------------------------------------------------


def test_a_deployments_secret_file_is_private_and_its_own(tmp_path):
    first, second = "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "6fa459ea-ee8a-3ca4-894e-db77e160355e"
    secret = new_secret()
    path = write_deployment_secret(tmp_path, first, secret)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(secret) >= 32
    assert read_deployment_secret(tmp_path, first) == secret
    assert read_deployment_secret(tmp_path, second) is None  # another deployment's file never counts
    assert read_deployment_secret(tmp_path, None) is None
    assert read_deployment_secret(tmp_path, "../../etc/passwd") is None
    with pytest.raises(ValueError):
        secret_path(tmp_path, "../x")

    other = new_secret()
    write_deployment_secret(tmp_path, second, other)  # a new deployment of the job: the old file goes
    assert not path.exists() and read_deployment_secret(tmp_path, second) == other
    remove_deployment_secret(tmp_path, first)  # an ended deployment removes only its own
    assert read_deployment_secret(tmp_path, second) == other
    remove_deployment_secret(tmp_path, second)
    assert list(tmp_path.iterdir()) == []

    assert is_authorized(f"Bearer {other}", other) and is_authorized(f"bearer  {other}", other)
    for header in (None, "", other, f"Basic {other}", f"Bearer {other[:-1]}", "Bearer "):
        assert not is_authorized(header, other), header


# -- the inference app (a stub predictor: no torch) ---------------------------------------------------------------


class _Stub:
    family = ModelFamily.GLINER2
    device = "cpu"
    source = Path("/srv/private/felix/jobs/job-x/model/merged")

    def predict(self, req):
        return {"result": {"entities": {label: [] for label in req.entities}}}


def test_the_inference_app_refuses_requests_without_the_secret():
    secret = new_secret()
    app = create_serving_app(_Stub(), job_id="job-x", secret=secret)
    body = {"text": "Alice works at Acme.", "entities": ["person"]}
    with TestClient(app) as c:
        for headers in ({}, auth_headers("x" * 43), {"Authorization": secret}, auth_headers(secret[:-2])):
            for r in (c.get("/health", headers=headers), c.post("/predict", json=body, headers=headers),
                      c.get("/docs", headers=headers), c.get("/nope", headers=headers)):
                assert r.status_code == 401, (headers, r.request.url)
                assert r.headers["www-authenticate"] == "Bearer" and "job-x" not in r.text
        ok = auth_headers(secret)
        health = c.get("/health", headers=ok)
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["job_id"] == "job-x"
        assert "model" not in health.json() and "/srv" not in health.text  # no filesystem path
        r = c.post("/predict", json=body, headers=ok)
        assert r.status_code == 200 and r.json()["result"] == {"entities": {"person": []}}
        r = c.post("/predict", json=body, headers={**ok, "X-Felix-Job": "job-y"})
        assert r.status_code == 421
    with pytest.raises(Exception, match="at least 16 characters"):
        create_serving_app(_Stub(), job_id="job-x", secret="short")


def test_the_inference_process_will_not_start_without_a_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "felix_train.service.serving", "--job-dir", str(tmp_path), "--port",
                          "0"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and SECRET_ENV in out.stderr


def test_the_api_answers_503_when_the_deployments_secret_is_gone(felix_home):
    """A row still `deployed` whose deployment ended (its secret file removed) is not forwarded anywhere."""
    from felix_train.service.api import Settings, create_app

    app = create_app(Settings(home=felix_home, database_url=f"sqlite:///{felix_home / 'felix.db'}", secret_key="k"))
    store = app.state.store
    user, key = store.create_user(name="alice")
    spec = {"base_model": LLM, "catalog_model": LLM}
    job = store.create_job(owner_id=user.id, name="j", spec=spec)
    store.set_status(job_id=job.id, status=JobStatus.COMPLETE)
    JobFolder(job.id, felix_home).create()
    store.request_deploy(job_id=job.id, owner_id=user.id)
    claimed = store.claim_deployment(worker_id="w")
    assert store.mark_deployed(job_id=job.id, deployment_id=claimed.deployment_id, port=9, pid=1)
    with TestClient(app) as c:
        r = c.post(f"/felix/trained-models/{job.id}/predict", headers={"Authorization": f"Bearer {key}"},
                   json={"prompt": "hi"})
    assert r.status_code == 503 and "is gone" in r.text


# -- end to end: a real worker and inference process, a local process without the secret --------------------------


def _raw_call(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> int:
    """What any other local process can do: call the port with the standard library, in its own process."""
    script = ("import http.client, json, sys\n"
              "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=60)\n"
              "c.request(sys.argv[2], sys.argv[3], body=sys.argv[4] or None, headers=json.loads(sys.argv[5]))\n"
              "r = c.getresponse(); print(r.status); print(r.read().decode())\n")
    out = subprocess.run([sys.executable, "-c", script, str(port), method, path, json.dumps(body) if body else "",
                          json.dumps({"Content-Type": "application/json", **(headers or {})})],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    status, text = out.stdout.split("\n", 1)
    return int(status), text


@pytest.fixture
def deployed_llm(felix_home, model_store):
    """A `complete` tiny-LLM job (a full model in `model/`) deployed by a real worker; the API beside it."""
    pytest.importorskip("torch")
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model
    from felix_train.service.api import Settings, create_app
    from felix_train.service.store import Store
    from felix_train.service.worker import Worker

    db_url = f"sqlite:///{felix_home / 'felix.db'}"
    app = create_app(Settings(home=felix_home, database_url=db_url, secret_key="k"))
    store = app.state.store
    user, key = store.create_user(name="alice")
    spec = {"base_model": LLM, "catalog_model": LLM, "datasets": [{"name": "chat"}], "training_type": "full",
            "training_algorithm": "sft", "engine": {}}
    job = store.create_job(owner_id=user.id, name="tiny", spec=spec)
    store.set_status(job_id=job.id, status=JobStatus.COMPLETE)
    folder = JobFolder(job.id, felix_home)
    folder.create()
    atomic_write_json(folder.spec_path, spec)
    atomic_write_json(folder.status_path, {"id": job.id, "status": "complete"})
    shutil.copytree(resolve_model(get_entry(LLM), model_store), folder.model_dir)
    worker_store = Store(db_url, home=felix_home)
    worker = Worker(worker_store, home=felix_home, poll_s=0.05, heartbeat_timeout_s=5, max_deployments=1)
    try:
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.post(f"/felix/training-jobs/{job.id}/deploy", headers=headers).status_code == 202
            deadline = time.monotonic() + 120
            while store.get_job(job_id=job.id).status != JobStatus.DEPLOYED:
                assert time.monotonic() < deadline, (folder.root / "serving.log").read_text()
                worker.tick()
                time.sleep(0.05)
            yield SimpleNamespace(client=client, headers=headers, store=store, worker=worker, job_id=job.id,
                                  folder=folder)
    finally:
        worker.shutdown()
        worker.tick()
        for srv in worker.serving.values():
            srv.proc.kill()
        worker_store.close()


def test_only_the_api_gets_predictions_from_a_deployed_model(deployed_llm):
    d = deployed_llm
    row = d.store.get_job(job_id=d.job_id)
    port, pid = row.serving_port, row.serving_pid
    secret_file = secret_path(d.folder.root, row.deployment_id)
    secret = secret_file.read_text()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in Path(f"/proc/{pid}/cmdline").read_text()  # never on the world-readable command line
    assert d.worker.serving[d.job_id].secret == secret

    body = {"prompt": "The capital of France is", "max_new_tokens": 6}
    # a local process without the secret (or with a wrong one) learns nothing
    for headers in ({}, auth_headers(new_secret()), {"X-Felix-Job": d.job_id}):
        status, text = _raw_call(port, "POST", "/predict", body, headers)
        assert status == 401, text
        status, text = _raw_call(port, "GET", "/health", None, headers)
        assert status == 401 and str(d.folder.root) not in text, text
    # with it: the model, and /health without the model's path
    status, text = _raw_call(port, "GET", "/health", None, auth_headers(secret))
    assert status == 200 and json.loads(text)["job_id"] == d.job_id and str(d.folder.root) not in text

    r = d.client.post(f"/felix/trained-models/{d.job_id}/predict", headers=d.headers, json=body)
    assert r.status_code == 200, r.text
    got = r.json()

    import torch

    from felix_train.models.lm_loader import load_causal_lm
    from felix_train.models.source import resolve_source

    model, tokenizer = load_causal_lm(resolve_source(d.folder.root), "cpu")
    ids = tokenizer(body["prompt"])["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = out[0][len(ids):].tolist()
    assert got["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(new)} and new
    assert got["text"] == tokenizer.decode(new, skip_special_tokens=True)

    # the worker's own health probe carries the secret: the model stays deployed through its checks
    srv = d.worker.serving[d.job_id]
    assert d.worker._healthy(srv)
    srv.last_check = 0.0
    d.worker.tick()
    assert srv.failed_checks == 0 and d.store.get_job(job_id=d.job_id).status == JobStatus.DEPLOYED

    # undeployed: the process stops and its secret goes with it
    assert d.client.post(f"/felix/training-jobs/{d.job_id}/undeploy", headers=d.headers).status_code == 200
    d.worker.tick()
    assert not d.worker.serving and not secret_file.exists()
