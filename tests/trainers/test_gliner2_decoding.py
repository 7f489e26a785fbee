"""Flat entity decoding on the tiny GLiNER2, end to end: the resolved decoding saved with the model and in its
metrics, `felix-train eval` using it (or `--decoding`), and serving applying it while answering in exactly the
format of the request's own `include_*` flags.

One short job in the session's shared `$FELIX_HOME`; the pure parts are in `tests/test_ner_decoding.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gliner2")

from felix_train.jobs import JobFolder  # noqa: E402
from felix_train.ner_decoding import overlaps, plain_entities  # noqa: E402
from felix_train.runner import ExitCode, run_job  # noqa: E402

PEOPLE = ["John Smith", "Mary Jones", "David Brown"]
TEXT = "Mary Jones watched Film99 with John Smith today ."


def records(n: int, seed: int = 0) -> list[dict]:
    """Two labels, never overlapping in the gold (so `auto` resolves to flat)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p, work = rng.choice(PEOPLE), f"Film{i}"
        out.append({"input": f"{p} watched {work} today .", "output": {"entities": {"person": [p], "work": [work]}}})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def flat_job(model_store, tmp_path_factory):
    from felix_train.data.registry import DatasetRegistry

    src = tmp_path_factory.mktemp("dec-data")
    reg = DatasetRegistry(model_store)
    assert reg.add("dec-works", write_jsonl(src / "works.jsonl", records(40)), overwrite=True).state.value == "ready"
    torch.set_num_threads(1)
    job = JobFolder("dec-flat", model_store)
    spec = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "dec-works"}], "training_type": "full",
            "learning_rate": 5e-3, "num_epochs": 1,
            "engine": {"batch_size": 8, "logging_steps": 5, "report_to": [], "eval": {"fraction": 0.2}}}
    code = run_job(spec, job_id=job.id, home=model_store)
    assert code == ExitCode.COMPLETE, job.read_status().get("error")
    return job


def test_the_resolved_decoding_lands_in_felix_model_json_and_the_metrics(flat_job):
    info = json.loads((flat_job.model_dir / "felix_model.json").read_text())
    assert info["decoding"] == "flat"
    assert flat_job.read_status()["metrics"]["decoding"] == "flat"
    assert "entity decoding: flat (engine.ner_decoding: auto)" in flat_job.log_path.read_text()


def test_felix_train_eval_reports_the_decoding_it_used(flat_job, model_store, tmp_path, capsys):
    from felix_train.cli import main

    test = write_jsonl(tmp_path / "test.jsonl", records(8, seed=3))

    def run(*args):
        assert main(["eval", "--home", str(model_store), flat_job.id, str(test), *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    report = run()
    assert (report["decoding"], report["decoding_source"]) == ("flat", "felix_model.json")
    report = run("--decoding", "nested")
    assert (report["decoding"], report["decoding_source"]) == ("nested", "argument")


def test_serving_decodes_flat_and_answers_in_the_request_s_own_format(flat_job, model_store):
    from felix_train.catalog import ModelFamily
    from felix_train.service.serving.predictors import load_predictor
    from felix_train.service.serving.protocol import parse_predict_request

    predictor = load_predictor(flat_job.root, home=model_store, device="cpu", dtype="fp32")
    assert predictor.decoding == "flat"
    model = predictor.model
    calls = []
    real = model.batch_extract

    def spy(texts, schema, **kw):
        calls.append(kw)
        return real(texts, schema, **kw)

    model.batch_extract = spy
    labels = ["person", "work", "name"]  # "name" competes with "person" for the same spans
    body = {"text": TEXT, "entities": labels, "threshold": 0.0}

    def ask(**extra):
        return predictor.predict(parse_predict_request(ModelFamily.GLINER2, {**body, **extra}))["result"]

    plain = ask()
    assert (calls[-1]["include_spans"], calls[-1]["include_confidence"]) == (True, True)  # asked for internally
    assert all(isinstance(m, str) for ms in plain["entities"].values() for m in ms)  # the caller's format
    full = ask(include_spans=True, include_confidence=True)
    kept = [(m["start"], m["end"]) for ms in full["entities"].values() for m in ms]
    assert kept and not any(overlaps(a, b) for i, a in enumerate(kept) for b in kept[i + 1:])
    assert plain == {"entities": plain_entities(full["entities"], include_confidence=False, include_spans=False)}

    nested = ask(decoding="nested")
    assert (calls[-1]["include_spans"], calls[-1]["include_confidence"]) == (False, False)
    assert sum(map(len, nested["entities"].values())) >= sum(map(len, plain["entities"].values()))


@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True)])
def test_plain_entities_matches_what_gliner2_answers_for_those_flags(flat_job, model_store, flags):
    """Asking with spans and confidences and stripping them gives gliner2's own answer for the other flags."""
    from felix_train.evaluate.ner import load_gliner2
    from felix_train.models.source import resolve_source

    model = load_gliner2(resolve_source(flat_job.root, home=model_store), "cpu")
    schema = model.create_schema().entities(["person", "work", "name"])
    texts = [TEXT, "John Smith and John Smith met Mary Jones .", "nothing here ."]
    full = model.batch_extract(texts, schema, threshold=0.0, include_spans=True, include_confidence=True)
    spans, conf = flags
    own = model.batch_extract(texts, schema, threshold=0.0, include_spans=spans, include_confidence=conf)
    assert [plain_entities(r["entities"], include_confidence=conf, include_spans=spans) for r in full] == \
        [r["entities"] for r in own]


@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True)])
def test_serving_s_flat_answer_keeps_the_other_tasks_in_the_request_s_format(flat_job, model_store, flags):
    """Classifications, relations and structures of a flat-decoded answer are what gliner2 returns for the flags
    (gliner2 de-duplicates relations by span, so they are taken from an answer asked with those flags)."""
    from felix_train.evaluate.ner import load_gliner2
    from felix_train.models.source import resolve_source
    from felix_train.service.serving.predictors import _flat_result

    model = load_gliner2(resolve_source(flat_job.root, home=model_store), "cpu")
    schema = (model.create_schema().entities(["person", "work"]).classification("tone", ["happy", "sad"])
              .relations(["watched"]).structure("viewing").field("who").field("film", dtype="str"))
    texts = [TEXT, "nothing here ."]
    spans, conf = flags
    full = model.batch_extract(texts, schema, threshold=0.0, include_spans=True, include_confidence=True)
    own = model.batch_extract(texts, schema, threshold=0.0, include_spans=spans, include_confidence=conf)
    got = [_flat_result(r, o, conf, spans) for r, o in zip(full, own)]
    assert [list(r) for r in got] == [list(r) for r in own]
    assert [{k: v for k, v in r.items() if k != "entities"} for r in got] == \
        [{k: v for k, v in r.items() if k != "entities"} for r in own]
