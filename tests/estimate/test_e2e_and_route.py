"""An estimate, then the job it estimates: steps and records exact, the throughput table row written by the
runner; and `POST /felix/training-jobs/estimate` (validation as job creation, nothing queued)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from felix_train.data.registry import DatasetRegistry
from felix_train.estimate import estimate
from felix_train.estimate.table import read_table
from felix_train.jobs import JobFolder
from felix_train.runner import run_job
from felix_train.spec import load_spec

NER = [{"input": f"Person{i} lives in City{i} and works at Firm{i} since {2000 + i}" + " again" * (i % 7),
        "output": {"entities": {"person": [f"Person{i}"], "location": [f"City{i}"]}}} for i in range(21)]


@pytest.mark.slow
def test_estimate_then_run_steps_and_records_exact(model_store, tmp_path):
    home = model_store
    path = tmp_path / "e2e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in NER))
    DatasetRegistry(home).add("e2e-ner", path, overwrite=True)
    body = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "e2e-ner"}], "num_epochs": 2,
            "engine": {"batch_size": 4, "max_length": 14, "length_policy": "truncate", "seed": 3,
                       "eval": {"fraction": 0.2, "split": "random"}}}
    spec = load_spec(body, home=home)
    before = estimate(spec, home=home, device="cpu", probe=False)
    assert before["datasets"]["e2e-ner"]["train"]["truncated"] > 0
    assert run_job(body, job_id="e2e-estimate", home=home, echo=False) == 0
    metrics = JobFolder("e2e-estimate", home).read_state().metrics
    assert metrics["global_step"] == before["steps"]
    assert (metrics["num_train_records"], metrics["num_eval_records"]) == (before["records"]["train"],
                                                                           before["records"]["eval"])
    runtime = metrics["train_runtime_s"]
    assert round(metrics["train_samples_per_second"] * runtime) == before["trained_records"]
    rows = [r for r in read_table(home).values() if r["job_id"] == "e2e-estimate"]
    assert rows and rows[0]["unit"] == "samples" and rows[0]["peak_rss_mb"] > 0 and rows[0]["formula_mb"] > 0
    after = estimate(spec, home=home, device="cpu", probe=False)
    assert after["time"]["basis"]["source"] == "job" and after["time"]["wall_s"] > 0
    assert after["memory"]["baseline_from"].startswith("table row")
    assert 0.2 < after["memory"]["peak_mb"] / rows[0]["peak_rss_mb"] < 5  # loosely: exact figures in the report


# -- the route ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def client(felix_home):
    from felix_train.service.api import Settings, create_app

    app = create_app(Settings(home=felix_home, database_url=f"sqlite:///{felix_home / 'felix.db'}",
                              secret_key="s3cret"))
    with TestClient(app) as c:
        yield c


def _headers(client, name):
    _, key = client.app.state.store.create_user(name=name)
    return {"Authorization": f"Bearer {key}"}


def _upload(client, headers, name, rows):
    import io

    r = client.post("/felix/datasets", headers=headers, data={"name": name},
                    files={"file": (f"{name}.jsonl", io.BytesIO("".join(json.dumps(x) + "\n" for x in rows).encode()),
                                    "application/jsonl")})
    assert r.status_code in (200, 201, 202), r.text


def test_estimate_route(client, felix_home):
    alice, bob = _headers(client, "alice"), _headers(client, "bob")
    _upload(client, alice, "ner", NER)
    body = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "ner"}],
            "engine": {"max_length": 14, "length_policy": "drop", "batch_size": 4}}
    r = client.post("/felix/training-jobs/estimate", headers=alice, json=body)
    assert r.status_code == 200, r.text
    e = r.json()
    assert {"datasets", "records", "tokens", "steps", "epochs", "time", "memory", "hyperparameters"} <= set(e)
    assert e["datasets"]["ner"]["train"]["dropped"] > 0 and e["time"]["basis"]["source"] == "none"
    assert client.get("/felix/training-jobs", headers=alice).json()["count"] == 0  # nothing queued
    # another user's dataset is unknown to bob: the 422 of job creation, which says nothing about alice's
    r = client.post("/felix/training-jobs/estimate", headers=bob, json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "dataset_not_found"
    r = client.post("/felix/training-jobs/estimate", headers=alice, json={**body, "learning_rat": 1})
    assert r.status_code == 422
    r = client.post("/felix/training-jobs/estimate", headers=alice, json={**body, "engine": {"max_length": 14}})
    assert r.status_code == 422 and {d["type"] for d in r.json()["detail"]} == {"record_too_long"}
    assert "/felix/training-jobs/estimate" in client.get("/openapi.json").json()["paths"]
    # job creation refuses the same records (issue 16 #4: not 201 and a failure at run time), with file and line
    r = client.post("/felix/training-jobs", headers=alice, json={**body, "engine": {"max_length": 14}})
    assert r.status_code == 422 and {d["type"] for d in r.json()["detail"]} == {"record_too_long"}
    assert "line" in r.json()["detail"][0]["msg"]
    assert client.get("/felix/training-jobs", headers=alice).json()["count"] == 0


@pytest.mark.slow
def test_without_a_table_row_the_estimate_probes_the_job(model_store, tmp_path):
    """No row: a 4-step run of the job in a child process and a temporary $FELIX_HOME gives the time, marked
    `probe`; the real table and jobs/ are left as they were (the probe is not a job of this home)."""
    from felix_train.models import resolve_model
    from felix_train.catalog import get_entry

    resolve_model(get_entry("felix/tiny-gliner2"), model_store)  # built once per session, in the shared store
    home = tmp_path / "home"  # its own home: other tests' jobs write throughput rows into the shared one
    (home / "models").mkdir(parents=True)
    for built in (model_store / "models").iterdir():
        (home / "models" / built.name).symlink_to(built)
    path = tmp_path / "probe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in NER))
    DatasetRegistry(home).add("probe-ner", path, overwrite=True)
    spec = load_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "probe-ner"}], "num_epochs": 3,
                      "engine": {"batch_size": 4, "max_length": 14, "length_policy": "truncate"}}, home=home)
    jobs_before = sorted(p.name for p in (home / "jobs").glob("*")) if (home / "jobs").exists() else []
    table_before = read_table(home)
    e = estimate(spec, home=home, device="cpu", probe=True)
    basis = e["time"]["basis"]
    assert basis["source"] == "probe" and basis["probe_steps"] == 4 and basis["unit"] == "samples"
    assert e["time"]["wall_s"] > e["time"]["train_s"] > 0 and e["time"]["s_per_step"] > 0
    assert read_table(home) == table_before
    assert (sorted(p.name for p in (home / "jobs").glob("*")) if (home / "jobs").exists() else []) == jobs_before
