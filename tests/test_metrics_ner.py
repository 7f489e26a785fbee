"""Exact-match NER scoring (felix_train.metrics_ner) and the builtin quickstart NER dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from felix_train.metrics_ner import mentions_of, normalize_mention, score_entities

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "felix_train" / "data" / "builtin" / "felix-ner-quickstart.jsonl"


def approx(x):
    return pytest.approx(x, abs=1e-9)


# ---------------------------------------------------------------------------
# score_entities
# ---------------------------------------------------------------------------

def test_perfect_match():
    gold = [{"person": ["Ada Lovelace"], "location": ["Lisbon"]}, {"person": [], "location": ["Oslo"]}]
    res = score_entities(gold, [dict(g) for g in gold])
    assert res["micro"]["precision"] == 1.0
    assert res["micro"]["recall"] == 1.0
    assert res["micro"]["f1"] == 1.0
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (3, 0, 0)
    assert res["labels"] == ["location", "person"]
    assert res["records"] == 2
    assert res["per_label"]["location"]["tp"] == 2
    assert res["per_label"]["person"]["support"] == 1


def test_partial_match():
    gold = [{"person": ["Ada Lovelace", "Alan Turing"], "location": ["London"]}]
    pred = [{"person": ["Ada Lovelace", "Turing"], "location": ["London", "Paris"]}]
    res = score_entities(gold, pred)
    m = res["micro"]
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 1)
    assert m["precision"] == approx(2 / 4)
    assert m["recall"] == approx(2 / 3)
    assert m["f1"] == approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["support"] == 3 and m["predicted"] == 4


def test_per_label_numbers():
    gold = [
        {"person": ["A B"], "organization": ["Acme"], "date": ["2020"]},
        {"person": ["C D"], "organization": [], "date": ["May 1"]},
    ]
    pred = [
        {"person": ["A B"], "organization": ["Acme Corp"], "date": ["2020"]},
        {"person": ["C D", "E F"], "organization": [], "date": []},
    ]
    res = score_entities(gold, pred)
    per = res["per_label"]
    assert (per["person"]["tp"], per["person"]["fp"], per["person"]["fn"]) == (2, 1, 0)
    assert per["person"]["precision"] == approx(2 / 3)
    assert per["person"]["recall"] == 1.0
    assert per["person"]["f1"] == approx(0.8)
    assert (per["organization"]["tp"], per["organization"]["fp"], per["organization"]["fn"]) == (0, 1, 1)
    assert per["organization"]["f1"] == 0.0
    assert (per["date"]["tp"], per["date"]["fp"], per["date"]["fn"]) == (1, 0, 1)
    assert per["date"]["precision"] == 1.0
    assert per["date"]["recall"] == 0.5
    m = res["micro"]
    assert (m["tp"], m["fp"], m["fn"]) == (3, 2, 2)
    assert m["f1"] == approx(0.6)
    assert res["macro"]["f1"] == approx((0.8 + 0.0 + 2 / 3) / 3)


def test_duplicates_are_a_multiset():
    gold = [{"person": ["Kim", "Kim"]}]
    # one of two: tp 1, fn 1
    res = score_entities(gold, [{"person": ["Kim"]}])
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (1, 0, 1)
    # three for two: tp 2, fp 1
    res = score_entities(gold, [{"person": ["Kim", "Kim", "Kim"]}])
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (2, 1, 0)


def test_empty_gold_and_pred():
    res = score_entities([], [])
    assert res["records"] == 0
    assert res["labels"] == []
    assert res["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0,
                            "support": 0, "predicted": 0}

    res = score_entities([{}, {"person": []}], [{}, {}])
    assert res["records"] == 2
    assert res["labels"] == ["person"]
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (0, 0, 0)
    assert res["micro"]["f1"] == 0.0


def test_only_false_positives_and_only_false_negatives():
    res = score_entities([{}], [{"product": ["Zephyr X5"]}])
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (0, 1, 0)
    assert res["micro"]["precision"] == 0.0 and res["micro"]["recall"] == 0.0
    res = score_entities([{"product": ["Zephyr X5"]}], [{}])
    assert (res["micro"]["tp"], res["micro"]["fp"], res["micro"]["fn"]) == (0, 0, 1)


def test_label_missing_in_pred():
    gold = [{"person": ["Ada"], "location": ["Lisbon"]}]
    pred = [{"person": ["Ada"]}]
    res = score_entities(gold, pred)
    assert res["per_label"]["location"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1, "support": 1, "predicted": 0,
    }
    assert res["per_label"]["person"]["f1"] == 1.0
    assert res["micro"]["recall"] == approx(0.5)
    assert res["micro"]["precision"] == 1.0


def test_explicit_labels_restrict_scoring():
    gold = [{"person": ["Ada"], "location": ["Lisbon"]}]
    pred = [{"person": ["Ada"], "location": ["Porto"], "product": ["X"]}]
    res = score_entities(gold, pred, labels=["person"])
    assert res["labels"] == ["person"]
    assert res["micro"]["f1"] == 1.0
    # a requested label nobody mentions still gets a row
    res = score_entities(gold, pred, labels=["person", "date"])
    assert res["per_label"]["date"]["support"] == 0


def test_case_sensitive_and_whitespace_normalised():
    gold = [{"organization": ["Northwind  Labs "], "person": ["Ada"]}]
    pred = [{"organization": ["Northwind Labs"], "person": ["ada"]}]
    res = score_entities(gold, pred)
    assert res["per_label"]["organization"]["tp"] == 1
    assert res["per_label"]["person"]["tp"] == 0
    assert res["per_label"]["person"]["fp"] == 1


def test_accepts_gliner2_payload_shapes():
    gold = [{"input": "Ada in Lisbon", "output": {"entities": {"person": ["Ada"], "location": ["Lisbon"]}}}]
    pred = [{"entities": {"person": [{"text": "Ada", "start": 0, "end": 3, "confidence": 0.9}],
                          "location": "Lisbon"}}]
    res = score_entities(gold, pred)
    assert res["micro"]["f1"] == 1.0
    assert mentions_of(None) == []
    assert mentions_of("") == []
    assert mentions_of([("Ada", 0.9, 0, 3)]) == ["Ada"]
    assert normalize_mention("  a \n b ") == "a b"


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        score_entities([{}], [])


# ---------------------------------------------------------------------------
# The builtin quickstart dataset
# ---------------------------------------------------------------------------

def _quickstart_records() -> list[dict]:
    lines = QUICKSTART.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_quickstart_dataset_validates():
    assert QUICKSTART.is_file(), f"missing {QUICKSTART}; run datagen/make_quickstart_ner.py"
    assert QUICKSTART.stat().st_size < 300_000
    records = _quickstart_records()
    assert len(records) >= 600

    label_sets = set()
    with_entities = 0
    for i, rec in enumerate(records):
        assert set(rec) == {"input", "output"}, i
        text = rec["input"]
        assert isinstance(text, str) and text.strip(), i
        ents = rec["output"]["entities"]
        assert isinstance(ents, dict) and ents, i
        label_sets.add(tuple(sorted(ents)))
        total = 0
        for label, mentions in ents.items():
            assert isinstance(mentions, list), (i, label)
            last = -1
            for mention in mentions:
                assert isinstance(mention, str) and mention.strip() == mention and mention, (i, label)
                assert mention in text, (i, label, mention)
                pos = text.find(mention)
                assert pos > last, f"record {i}: {label} mentions not in order of occurrence"
                last = pos
            total += len(mentions)
        with_entities += total > 0

    assert len(label_sets) == 1, f"records disagree on the label set: {label_sets}"
    labels = next(iter(label_sets))
    assert len(labels) >= 4
    assert with_entities >= 0.6 * len(records)
    assert with_entities < len(records), "expected some records without entities"
    # every label is actually used
    for label in labels:
        assert any(rec["output"]["entities"][label] for rec in records), label


def test_quickstart_generator_reproduces_file(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "q.jsonl"
    subprocess.run([sys.executable, str(ROOT / "datagen" / "make_quickstart_ner.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == QUICKSTART.read_bytes()


# ---------------------------------------------------------------------------
# scripts/eval_gliner.py helpers (no model needed)
# ---------------------------------------------------------------------------

def _eval_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_gliner", ROOT / "scripts" / "eval_gliner.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_eval_script_resolves_model_dirs(tmp_path, felix_home):
    ev = _eval_script()
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    assert ev.resolve_model_dir(str(full)) == full

    lora = tmp_path / "lora" / "model"
    (lora / "merged").mkdir(parents=True)
    (lora / "merged" / "config.json").write_text("{}")
    (lora / "adapter_config.json").write_text("{}")
    assert ev.resolve_model_dir(str(lora)) == lora / "merged"
    assert ev.resolve_model_dir(str(lora.parent)) == lora / "merged"  # the job folder

    job_model = felix_home / "jobs" / "job-123" / "model"
    job_model.mkdir(parents=True)
    (job_model / "config.json").write_text("{}")
    assert ev.resolve_model_dir("job-123") == job_model

    with pytest.raises(SystemExit):
        ev.resolve_model_dir("no-such-job")


def test_eval_script_loads_records(tmp_path):
    ev = _eval_script()
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"input": "Ada in Lisbon", "output": {"entities": {"person": ["Ada"], "location": ["Lisbon"]}}})
        + "\n\n"
        + json.dumps({"input": "nothing here", "output": {"entities": {}}})
        + "\n"
    )
    recs = ev.load_records(path)
    assert [r["input"] for r in recs] == ["Ada in Lisbon", "nothing here"]
    assert recs[1]["entities"] == {}
    assert len(ev.load_records(path, limit=1)) == 1
