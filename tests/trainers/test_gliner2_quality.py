"""Issue 17 on the tiny GLiNER2, end to end: verbalised and described labels, calibrated thresholds saved with the
model and used by `felix-train eval` and serving, seen/unseen F1 on a random split, early stopping exporting the
best checkpoint.

Two short jobs in the session's shared `$FELIX_HOME` (the tiny model is built once); the pure parts are in
`test_gliner2_quality_units.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gliner2")

from felix_train.checkpoints import list_checkpoints  # noqa: E402
from felix_train.jobs import JobFolder  # noqa: E402
from felix_train.runner import ExitCode, run_job  # noqa: E402

PEOPLE = ["John Smith", "Mary Jones", "David Brown"]


def records(n: int, seed: int = 0) -> list[dict]:
    """People from a small pool (seen in training), works with names of their own (unseen), some empty records;
    a few records describe `creative-work`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 6 == 5:
            out.append({"input": "we went home early .", "output": {"entities": {"person": []}}})
            continue
        p = rng.choice(PEOPLE)
        work = f"Film{i}"
        rec = {"input": f"{p} watched {work} today .", "output": {"entities": {"person": [p], "creative-work": [work]}}}
        if i % 4 == 0:
            rec["output"]["entity_descriptions"] = {"creative-work": "a film, book or song"}
        out.append(rec)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def spec(dataset: str, **engine) -> dict:
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": dataset}], "training_type": "full",
            "learning_rate": 5e-3, "num_epochs": 2,
            "engine": {"batch_size": 8, "logging_steps": 5, "report_to": [], "eval": {"fraction": 0.2}, **engine}}


@pytest.fixture(scope="module")
def store(model_store, tmp_path_factory):
    from felix_train.data.registry import DatasetRegistry

    src = tmp_path_factory.mktemp("q-data")
    reg = DatasetRegistry(model_store)
    assert reg.add("q-works", write_jsonl(src / "works.jsonl", records(48)), overwrite=True).state.value == "ready"
    return model_store


@pytest.fixture(scope="module")
def described_job(store):
    torch.set_num_threads(1)
    job = JobFolder("q-described", store)
    code = run_job(spec("q-works", label_descriptions={"person": "a human being"}), job_id=job.id, home=store)
    assert code == ExitCode.COMPLETE, job.read_status().get("error")
    return job


def test_the_model_sees_verbalised_described_labels_and_metrics_keep_the_dataset_s(described_job):
    job = described_job
    seen = [json.loads(line) for line in (job.work_dir / "gliner2" / "train.jsonl").read_text().splitlines()]
    for rec in seen:  # what gliner2's dataset holds
        ents = rec["output"]["entities"]
        assert "creative-work" not in ents
        if "creative work" in ents:
            assert rec["output"]["entity_descriptions"] == {"creative work": "a film, book or song",
                                                            "person": "a human being"}
    metrics = job.read_status()["metrics"]
    assert {"eval_f1/creative-work", "eval_f1/person"} <= set(metrics)
    assert not any("creative work" in k for k in metrics)
    info = json.loads((job.model_dir / "felix_model.json").read_text())
    assert info["label_prompts"] == {"person": "person", "creative-work": "creative work"}
    assert info["label_descriptions"] == {"creative-work": "a film, book or song", "person": "a human being"}
    assert "labels asked as 'creative-work' -> 'creative work'" in job.log_path.read_text()


def test_random_split_reports_seen_and_unseen_f1_apart(described_job):
    metrics = described_job.read_status()["metrics"]
    assert metrics["eval_split"] == "random"  # 40 entity records: too few for an unseen-mention split
    # people come from a pool of three (seen), every work is new (unseen)
    assert metrics["eval_support_seen"] > 0 and metrics["eval_support_unseen"] > 0
    assert {"eval_f1_seen", "eval_f1_unseen"} <= set(metrics)
    assert "eval split random: random split (an unseen-mention split" in described_job.log_path.read_text()


def test_calibrated_thresholds_beat_half_and_land_in_felix_model_json(described_job):
    metrics = described_job.read_status()["metrics"]
    assert metrics["eval_f1_at_0.5"] == pytest.approx(metrics["eval_f1"])  # entity-only data: the same figure
    assert metrics["eval_f1_calibrated"] >= metrics["eval_f1_at_0.5"]
    info = json.loads((described_job.model_dir / "felix_model.json").read_text())
    thresholds = info["thresholds"]
    assert thresholds["default"] == metrics["threshold"] and 0.05 <= thresholds["default"] <= 0.95
    assert set(thresholds) <= {"default", "person", "creative-work"}
    chosen = info["thresholds_chosen"]
    assert "per label" in chosen["rule"] and chosen["eval_f1_calibrated"] == metrics["eval_f1_calibrated"]
    assert info["eval_split"] == "random"


def test_felix_train_eval_uses_saved_thresholds_and_verbalised_labels(described_job, store, tmp_path, capsys):
    from felix_train.cli import main

    test = write_jsonl(tmp_path / "test.jsonl", records(12, seed=5))
    info = json.loads((described_job.model_dir / "felix_model.json").read_text())

    def run(*args):
        assert main(["eval", "--home", str(store), described_job.id, str(test), *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    report = run()
    assert (report["threshold"], report["threshold_source"]) == (info["thresholds"]["default"], "felix_model.json")
    assert report["asked_as"] == {"creative-work": "creative work"}
    assert set(report["per_label"]) == {"creative-work", "person"}
    report = run("--threshold", "0.3")
    assert (report["threshold"], report["threshold_source"]) == (0.3, "argument")


def test_serving_defaults_to_the_saved_thresholds(described_job, store):
    from felix_train.catalog import ModelFamily
    from felix_train.service.serving.predictors import load_predictor
    from felix_train.service.serving.protocol import parse_predict_request

    predictor = load_predictor(described_job.root, home=store, device="cpu", dtype="fp32")
    saved = json.loads((described_job.model_dir / "felix_model.json").read_text())["thresholds"]
    calls = []
    real = predictor.model.batch_extract

    def spy(texts, schema, **kw):
        calls.append((kw["threshold"], dict(schema._entity_metadata) if hasattr(schema, "_entity_metadata") else None))
        return real(texts, schema, **kw)

    predictor.model.batch_extract = spy
    body = {"text": "Mary Jones watched Film99 today .", "entities": ["person", "creative-work"]}
    assert "result" in predictor.predict(parse_predict_request(ModelFamily.GLINER2, body))
    predictor.predict(parse_predict_request(ModelFamily.GLINER2, {**body, "threshold": 0.42}))
    assert calls[0][0] == saved["default"] and calls[1][0] == 0.42
    for label, t in saved.items():
        if label != "default":
            assert calls[0][1][label]["threshold"] == t
    assert all(meta.get("threshold") is None for meta in calls[1][1].values())


def test_early_stopping_ends_training_and_exports_the_best_checkpoint(store, monkeypatch):
    """Scripted eval F1 (0.2, 0.6, 0.4, 0.3, ...) with patience 2: training ends after epoch 4 of 6, and job/model/
    holds the weights of the epoch-2 checkpoint, the one served and downloaded."""
    from safetensors.torch import load_file

    from felix_train.trainers.gliner2 import loop

    scripted = iter([0.2, 0.6, 0.4, 0.3, 0.9, 0.9])
    monkeypatch.setattr(loop, "evaluate", lambda trainer: {"eval_loss": 1.0, "eval_f1": next(scripted)})
    torch.set_num_threads(1)
    job = JobFolder("q-early", store)
    code = run_job({**spec("q-works", early_stopping_patience=2), "num_epochs": 6}, job_id=job.id, home=store)
    assert code == ExitCode.COMPLETE, job.read_status().get("error")
    metrics = job.read_status()["metrics"]
    steps_per_epoch = 5  # 38 training records, batch 8
    assert metrics["global_step"] == 4 * steps_per_epoch
    assert metrics["final_model_from"] == "best_checkpoint" and metrics["eval_f1"] == 0.6
    best = next(m for m in list_checkpoints(job) if m.uuid == metrics["final_model_checkpoint"])
    assert best.step == 2 * steps_per_epoch
    info = json.loads((job.model_dir / "felix_model.json").read_text())
    assert info["checkpoint"] == best.uuid and info["step"] == best.step
    exported = load_file(str(job.model_dir / "model.safetensors"))
    kept = load_file(str(job.checkpoints_dir / best.uuid / "model" / "model.safetensors"))
    assert exported.keys() == kept.keys() and all(torch.equal(exported[k], kept[k]) for k in kept)
    assert "early stopping at step 20" in job.log_path.read_text()
