"""The job object a client expects (issue 20): `queue_position` while requested, `estimated_finish` and throughput
while running, `trained_tokens` and `hyperparameters` (resolved), all documented in the OpenAPI schema."""

from __future__ import annotations

from felix_train.jobs import JobStatus
from test_api import alice, app, bob, client, store, submit, upload  # noqa: F401 - fixtures


def test_requested_jobs_have_their_queue_position_and_resolved_hyperparameters(client, alice, bob, store):
    upload(client, alice)
    upload(client, bob)
    first = submit(client, alice, engine={"max_steps": 2, "max_time": "2h"})
    second = submit(client, alice)
    third = submit(client, bob)
    assert (first["queue_position"], second["queue_position"], third["queue_position"]) == (0, 1, 2)
    hp = first["hyperparameters"]
    assert hp["max_time"] == 7200.0 and hp["max_tokens"] is None and hp["num_epochs"] == 3
    assert hp["lora"]["r"] == 16 and hp["lora"]["alpha"] == 32 and hp["lora"]["target_modules"]
    assert hp["batch_size"] and hp["max_length"] and hp["rl_config"] is None
    assert first["estimated_finish"] is None and first["trained_tokens"] is None

    store.set_status(job_id=first["id"], status=JobStatus.RUNNING, progress={
        "step": 3, "total_steps": 10, "epoch": 0.3, "eta_s": 70.0, "estimated_finish": "2030-01-01T00:01:10+00:00",
        "trained_tokens": 24, "samples_per_s": 61.5, "achieved_tflops": 0.5, "mfu": 0.2})
    listed = {j["id"]: j for j in client.get("/felix/training-jobs", headers=alice).json()["data"]}
    assert listed[second["id"]]["queue_position"] == 0  # the running job left the queue
    running = listed[first["id"]]
    assert running["queue_position"] is None and running["estimated_finish"].startswith("2030-01-01T00:01:10")
    assert running["trained_tokens"] == 24
    assert running["progress"]["samples_per_s"] == 61.5 and running["progress"]["mfu"] == 0.2
    assert client.get(f"/felix/training-jobs/{third['id']}", headers=bob).json()["queue_position"] == 1

    store.set_status(job_id=first["id"], status=JobStatus.COMPLETE, metrics={"trained_tokens": 80, "eval_f1": 0.5})
    done = client.get(f"/felix/training-jobs/{first['id']}", headers=alice).json()
    assert done["trained_tokens"] == 80 and done["estimated_finish"] is None and done["queue_position"] is None
    assert done["hyperparameters"] == hp and done["metrics"]["trained_tokens"] == 80


def test_openapi_documents_the_job_object_fields_with_examples(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    job = schemas["TrainingJobPublic"]["properties"]
    for field in ("estimated_finish", "trained_tokens", "hyperparameters", "queue_position"):
        assert job[field].get("description") and job[field].get("examples"), field
    progress = schemas["ProgressPublic"]["properties"]
    for field in ("trained_tokens", "tokens_per_s", "samples_per_s", "mfu"):
        assert progress[field].get("examples"), field
    engine = schemas["EngineSpec"]["properties"]
    assert "2h" in str(engine["max_time"]) and engine["max_tokens"].get("description")
