"""End to end: a real `uvicorn` server process and a real worker process train a tiny GLiNER2 over HTTP.

Upload a dataset, submit a `felix/tiny-gliner2` job, follow its log until it ends, list its
checkpoints, download the weights and load them with `GLiNER2.from_pretrained`, delete the
job. CPU only, offline; about a minute.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
if importlib.util.find_spec("gliner2") is None:  # found, not imported: collection stays light
    pytest.skip("the gliner2 library is not installed", allow_module_level=True)
if importlib.util.find_spec("felix_train.trainers.gliner2") is None:
    pytest.skip("the GLiNER2 trainer (felix_train/trainers/gliner2.py) is not in this build", allow_module_level=True)

from felix_train.service.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

PEOPLE = ["Alice Martin", "Bob Chen", "Carla Diaz", "Dmitri Ivanov", "Emeka Obi", "Fatima Zahra"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella Labs", "Stark Industries", "Wayne Enterprises"]
CITIES = ["Paris", "Berlin", "Lagos", "Osaka", "Toronto", "Lima"]
TEMPLATES = [
    "{p} joined {c} in {l} last spring.",
    "{c} opened a new office in {l}, said {p}.",
    "In {l}, {p} presented the results of {c}.",
    "{p} left {c} and moved to {l}.",
]


def _dataset(n: int = 24) -> bytes:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        person, company, city = rng.choice(PEOPLE), rng.choice(COMPANIES), rng.choice(CITIES)
        text = TEMPLATES[i % len(TEMPLATES)].format(p=person, c=company, l=city)
        entities = {"person": [person], "company": [company], "city": [city]}
        lines.append(json.dumps({"input": text, "output": {"entities": entities}}))
    return ("\n".join(lines) + "\n").encode()


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


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_train_a_tiny_gliner2_over_http(model_store, tmp_path):
    home = model_store  # tiny base models built once per session are reused
    db_url = f"sqlite:///{tmp_path / 'felix.db'}"
    store = Store(db_url, home=home)
    _, key = store.create_user(name="e2e")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _spawn(["-m", "felix_train.service.api", "--host", "127.0.0.1", "--port", str(port), "--home", str(home),
                     "--database-url", db_url, "--log-level", "warning"], home, tmp_path / "server.log")
    worker = _spawn(["-m", "felix_train.service.worker", "--home", str(home), "--database-url", db_url,
                     "--poll", "0.2", "--worker-id", "e2e-worker"], home, tmp_path / "worker.log")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            _wait(lambda: _up(http), 30, "the server to answer")

            r = http.post("/felix/datasets", data={"name": "people"},
                          files={"file": ("people.jsonl", io.BytesIO(_dataset()), "application/jsonl")})
            assert r.status_code == 202, r.text
            ds = _wait(lambda: (d := http.get("/felix/datasets/people").json())["state"] != "processing" and d,
                       30, "the dataset's validation")
            assert ds["state"] == "ready" and ds["num_records"] == 24, ds

            body = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "people"}], "name": "e2e-tiny",
                    "engine": {"max_steps": 10, "save_steps": 5, "logging_steps": 2, "batch_size": 4,
                               "report_to": [], "eval": {"fraction": 0}}}
            r = http.post("/felix/training-jobs", json=body)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]

            with http.stream("GET", f"/felix/training-jobs/{job_id}/logs", params={"follow": "true"},
                             timeout=httpx.Timeout(30, read=90)) as stream:
                assert stream.status_code == 200
                followed = "".join(stream.iter_text())
            job = http.get(f"/felix/training-jobs/{job_id}").json()
            assert job["status"] == "complete", (job, followed[-2000:], (tmp_path / "worker.log").read_text()[-3000:])
            assert "dataset people: 24 records" in followed, followed
            assert "job complete" in followed
            assert job["progress"]["step"] == 10 and "train_loss" in job["metrics"]

            ckpts = http.get(f"/felix/training-jobs/{job_id}/checkpoints").json()
            assert ckpts["count"] >= 1 and ckpts["data"][-1]["step"] == 10
            assert all(len(c["uuid"]) == 36 for c in ckpts["data"])

            url = http.get(f"/felix/training-jobs/{job_id}/download").json()["url"]
            archive = httpx.get(url, timeout=60)  # the signed URL alone, no API key
            assert archive.status_code == 200
            out = tmp_path / "download"
            zipfile.ZipFile(io.BytesIO(archive.content)).extractall(out)
            model = _load_gliner2(out / "model")
            found = model.extract_entities("Alice Martin joined Globex in Paris.", ["person", "company", "city"])
            assert isinstance(found, dict)

            r = http.delete(f"/felix/training-jobs/{job_id}")
            assert r.status_code == 200 and r.json()["success"] is True
            assert not (home / "jobs" / job_id).exists()
            assert http.get(f"/felix/training-jobs/{job_id}").status_code == 404
    finally:
        worker_rc, server_rc = _stop(worker), _stop(server)
        store.close()
    assert worker_rc == 0, (tmp_path / "worker.log").read_text()[-3000:]
    # uvicorn shuts down gracefully, then re-raises the signal it got
    assert server_rc in (0, -signal.SIGTERM), (tmp_path / "server.log").read_text()[-3000:]


def _up(http) -> bool:
    try:
        return http.get("/docs").status_code == 200
    except httpx.TransportError:
        return False


def _load_gliner2(model_dir: Path):
    """Load the downloaded model the way its `felix_model.json` says (a LoRA job ships a merged copy)."""
    from gliner2 import GLiNER2

    layout = json.loads((model_dir / "felix_model.json").read_text())
    entry = next(f for f in layout["files"].values() if f["format"] == "gliner2")
    return GLiNER2.from_pretrained(str(model_dir / entry["path"]))
