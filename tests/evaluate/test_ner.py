"""`felix-train eval` on NER data: a trained GLiNER2 job, the untrained base, `--labels-map`, saved thresholds,
the `scripts/eval_gliner.py` wrapper, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval_helpers import ner_records, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ner_test(data_dir) -> Path:
    return write_jsonl(data_dir / "ner-test.jsonl", ner_records(6, seed=1))


def test_a_ner_job_and_its_base_model_get_per_label_and_micro_figures(ner_job, ner_test, run_eval):
    code, report, _ = run_eval(ner_job, str(ner_test))
    assert code == 0
    assert report["eval"] == "ner" and report["format"] == "gliner2"
    assert report["model"]["kind"] == "job" and report["model"]["job"] == ner_job
    assert report["model"]["weights"].endswith("model/merged")
    assert report["threshold"] == 0.5 and report["threshold_source"] == "default"
    assert report["labels"] == ["location", "person"] == sorted(report["per_label"])
    assert report["records"] == 6
    micro = report["micro"]
    assert micro["support"] == sum(m["support"] for m in report["per_label"].values()) == micro["tp"] + micro["fn"]
    assert 0.0 <= micro["f1"] <= 1.0

    code, base, _ = run_eval("felix/tiny-gliner2", str(ner_test), "--threshold", "0.9", "--limit", "4")
    assert code == 0
    assert base["model"]["kind"] == "catalog" and base["model"]["catalog_id"] == "felix/tiny-gliner2"
    assert base["threshold"] == 0.9 and base["threshold_source"] == "argument"
    assert base["records"] == 4 and base["limit"] == 4

    code, text, _ = run_eval(ner_job, str(ner_test), json_out=False)
    assert code == 0 and "micro" in text and "person" in text


def test_labels_map_asks_the_model_for_its_labels_and_scores_the_file_s(ner_job, ner_test, run_eval):
    code, report, _ = run_eval(ner_job, str(ner_test), "--labels-map", "human=person,place=location,town=location")
    assert code == 0
    assert report["model_labels"] == ["human", "place", "town"]
    assert report["labels_map"] == {"human": "person", "place": "location", "town": "location"}
    assert sorted(report["per_label"]) == ["location", "person"]


class FakeGLiNER2:
    """Predicts fixed mentions per model label and remembers what it was asked."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def batch_extract_entities(self, texts, entity_types, *, batch_size, threshold, include_spans):
        self.calls.append({"entity_types": entity_types, "threshold": threshold})
        return [{"entities": {lab: [{"text": m} for m in self.answers.get(lab, [])] for lab in entity_types}}
                for _ in texts]


@pytest.fixture
def fake_model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "span"}))
    return folder


def test_labels_map_pools_several_model_labels_onto_one(fake_model_dir, tmp_path, monkeypatch):
    from felix_train.evaluate import evaluate, ner

    fake = FakeGLiNER2({"city": ["Paris"], "country": ["France"], "person": ["Ada"], "misc": ["x"]})
    monkeypatch.setattr(ner, "load_gliner2", lambda ref, device=None: fake)
    data = write_jsonl(tmp_path / "t.jsonl", [
        {"input": "Ada went from Paris to France .", "output": {"entities": {"person": ["Ada"], "place": ["Paris"]}}}])
    report = evaluate(str(fake_model_dir), data, labels_map="city=place,country=place")
    assert sorted(fake.calls[0]["entity_types"]) == ["city", "country", "person"]  # `place` itself is not asked
    place, person = report["per_label"]["place"], report["per_label"]["person"]
    assert (place["tp"], place["fp"], place["fn"]) == (1, 1, 0)  # Paris (city) right, France (country) not
    assert (person["tp"], person["fp"], person["fn"]) == (1, 0, 0)
    assert "misc" not in report["per_label"]
    assert report["micro"]["tp"] == 2 and report["micro"]["fp"] == 1 and report["micro"]["fn"] == 0


def test_saved_thresholds_are_used_unless_one_is_given(fake_model_dir, tmp_path, monkeypatch):
    from felix_train.evaluate import evaluate, ner

    (fake_model_dir / "felix_model.json").write_text(json.dumps({"thresholds": {"default": 0.4, "person": 0.7}}))
    fake = FakeGLiNER2({})
    monkeypatch.setattr(ner, "load_gliner2", lambda ref, device=None: fake)
    data = write_jsonl(tmp_path / "t.jsonl", ner_records(2))
    report = evaluate(str(fake_model_dir), data)
    assert (report["threshold"], report["threshold_source"]) == (0.4, "felix_model.json")
    assert report["label_thresholds"] == {"person": 0.7}
    assert fake.calls[0] == {"entity_types": {"location": {}, "person": {"threshold": 0.7}}, "threshold": 0.4}

    report = evaluate(str(fake_model_dir), data, threshold=0.25)
    assert (report["threshold"], report["threshold_source"]) == (0.25, "argument")
    assert "label_thresholds" not in report
    assert fake.calls[1] == {"entity_types": {"location": {}, "person": {}}, "threshold": 0.25}


def test_the_eval_gliner_script_wraps_the_verb_and_prints_only_json(ner_job, ner_test, eval_home):
    env = {**os.environ, "FELIX_HOME": str(eval_home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_gliner.py"), ner_job, str(ner_test),
                           "--limit", "2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # one JSON object and nothing else
    assert report["eval"] == "ner" and report["records"] == 2


@pytest.mark.parametrize("args, code, message", [
    (["no-such-job", "{data}"], 1, "error: no model at 'no-such-job'"),
    (["felix/tiny-gliner2", "{missing}"], 3, "error: cannot read"),
    (["felix/tiny-gliner2", "{chats}", "--threshold", "0.3"], 1, "--threshold apply to NER"),
    (["felix/tiny-gliner2", "{chats}"], 3, "need a causal_lm model, but felix/tiny-gliner2 is a gliner2 model"),
    (["felix/tiny-gliner2", "{data}", "--labels-map", "person"], 1, "--labels-map takes MODEL_LABEL=TEST_LABEL"),
])
def test_errors_are_one_line_and_json_stays_one_object(ner_test, tmp_path, run_eval, args, code, message):
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"text": "hello"}])
    paths = {"data": str(ner_test), "missing": str(tmp_path / "missing.jsonl"), "chats": str(chats)}
    got, report, err = run_eval(*[a.format(**paths) for a in args])
    assert got == code
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert set(report) == {"error"}
