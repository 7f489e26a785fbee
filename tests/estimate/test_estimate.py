"""The estimate: the length policy before a job runs, the step/token formulas against what the trainers do,
the memory formula, the throughput table, `felix-train estimate` and `validate` refusing over-long records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from felix_train.data.length_policy import (
    REASON_DROPPED, REASON_NOTHING_TRAINED, REASON_TRUNCATED, Measured, apply_policy, gliner2_word_splitter, word_count,
)
from felix_train.data.registry import DatasetRegistry
from felix_train.estimate.counting import schedule, seeded_split
from felix_train.perf.memory import parameter_counts, predict_memory
from felix_train.estimate.table import find_row, read_table, row_key, write_row
from felix_train.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

NER = [{"input": f"Person{i} lives in City{i} and works at Firm{i} since {2000 + i}.",
        "output": {"entities": {"person": [f"Person{i}"], "location": [f"City{i}"]}}} for i in range(23)]
LONG = {"input": " ".join(["word"] * 40), "output": {"entities": {"person": []}}}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def ner_home(felix_home, tmp_path):
    reg = DatasetRegistry(felix_home)
    reg.add("ner", write_jsonl(tmp_path / "ner.jsonl", NER[:10] + [LONG] + NER[10:]))
    return felix_home


def gliner_spec(home, **engine):
    return load_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "ner"}], "num_epochs": 2,
                      "engine": {"batch_size": 3, "max_length": 20, "eval": {"fraction": 0.2, "split": "random"},
                                 **engine}}, home=home)


# -- the length policy ---------------------------------------------------------------------------------------------

def test_policy_counts_truncated_and_dropped_with_reasons():
    ms = [Measured("a", 1, 5), Measured("a", 2, 12), Measured("a", 3, 15, trained_within=False), Measured("b", 1, 9)]
    counts, kept = apply_policy(ms, policy="truncate", max_length=10)
    assert counts["a"].to_json() == {"records": 2, "tokens": 15, "truncated": 2, "dropped": 1,
                                     "reasons": {REASON_TRUNCATED: 1, REASON_NOTHING_TRAINED: 1}}
    assert [m.length for m in kept] == [5, 10, 9]
    counts, _ = apply_policy(ms, policy="drop", max_length=10)
    assert counts["a"].to_json()["reasons"] == {REASON_DROPPED: 2} and counts["a"].records == 1


def test_word_splitter_is_gliner2s_and_loads_without_torch():
    code = ("import sys; from felix_train.data.length_policy import gliner2_word_splitter, word_count; "
            "n = word_count('Dr. Smith-Jones e-mailed x@y.com at www.a.b!', gliner2_word_splitter()); "
            "assert not [m for m in ('torch', 'gliner2') if m in sys.modules]; print(n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    from gliner2.processing.word_splitter import WhitespaceTokenSplitter

    text = "Dr. Smith-Jones e-mailed x@y.com at www.a.b!"
    assert int(out.stdout) == sum(1 for _ in WhitespaceTokenSplitter()(text)) == word_count(text, gliner2_word_splitter())


def test_validate_refuses_an_over_long_record_with_file_and_line(ner_home, tmp_path, capsys):
    from felix_train.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("base_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\nengine: {max_length: 20}\n")
    assert main(["--home", str(ner_home), "validate", "--json", str(spec)]) == 3
    detail = json.loads(capsys.readouterr().out)["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(["datasets", "ner", 11], "record_too_long")]
    assert "data.jsonl) line 11: 40 words > engine.max_length 20; expected at most 20 words" in detail[0]["msg"]
    spec.write_text("base_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\n"
                    "engine: {max_length: 20, length_policy: truncate}\n")
    assert main(["--home", str(ner_home), "validate", str(spec)]) == 0


# -- steps, epochs, records and tokens: the trainers' own ----------------------------------------------------------

def test_gliner2_counts_match_prepare_data(ner_home):
    from felix_train.estimate.counting import count, resolve_datasets
    from felix_train.trainers.gliner2.data import prepare_data

    spec = gliner_spec(ner_home, length_policy="truncate", gradient_accumulation_steps=2)
    c = count(spec, home=ner_home)
    train, ev = resolve_datasets(spec, ner_home)
    data = prepare_data(_Ctx(spec, train, ev), gliner2_word_splitter())
    assert (c.train_records, c.eval_records) == (len(data.train), len(data.eval)) == (19, 5)
    splitter = gliner2_word_splitter()
    assert c.train_tokens == sum(min(word_count(r["input"], splitter), 20) for r in data.train)
    assert c.per_dataset["ner"]["train"]["truncated"] == data.truncated == 1
    # FelixGLiNER2Trainer: ceil(19 / 3) = 7 batches, ceil(7 / 2) = 4 steps per epoch, 2 epochs
    assert (c.steps_per_epoch, c.total_steps, c.epochs) == (4, 8, 2)
    assert c.trained_records == 38 and c.trained_tokens == 2 * c.train_tokens and c.exact


class _Ctx:
    def __init__(self, spec, train, ev):
        self.spec, self.train_data, self.eval_data = spec, train, ev


def test_hf_schedule_and_split_match_transformers_and_datasets():
    from datasets import Dataset

    from felix_train.trainers.lm_common import eval_split

    data = Dataset.from_dict({"i": list(range(37))})
    tr, ev = eval_split(data, 0.1, 42)
    assert seeded_split(37, 0.1, 42) == (tr["i"], ev["i"])

    class S:  # the fields `schedule` reads
        num_epochs = 3

        class engine:
            batch_size, gradient_accumulation_steps, max_steps = 4, 3, None

            class distributed:
                num_processes = 1
    # transformers: len_dataloader = ceil(33 / 4) = 9; 9 // 3 + (9 % 3 > 0) = 3 per epoch
    assert schedule(S, 33, hf=True) == (3, 9, 3)
    S.engine.max_steps = 7
    assert schedule(S, 33, hf=True) == (3, 7, 3)


# -- memory ----------------------------------------------------------------------------------------------------------

def test_memory_formula_on_a_known_model(tmp_path):
    import struct

    header = {"model.layers.0.self_attn.q_proj.weight": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 0]},
              "model.layers.0.mlp.up_proj.weight": {"dtype": "F32", "shape": [128, 64], "data_offsets": [0, 0]},
              "model.embed_tokens.weight": {"dtype": "F32", "shape": [1000, 64], "data_offsets": [0, 0]},
              "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 0]}}
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 1,
                                                      "num_attention_heads": 4, "vocab_size": 1000}))
    total = 64 * 64 + 128 * 64 + 1000 * 64 + 64
    lora = 8 * (64 + 64) + 8 * (128 + 64)
    shapes = {k: (v["shape"], v["dtype"]) for k, v in header.items()}
    assert parameter_counts(shapes, family="causal_lm", training_type="lora", lora_r=8, targets="all-linear") \
        == (total, lora)
    m = predict_memory(tmp_path, family="causal_lm", training_type="lora", lora_r=8, targets="all-linear",
                       batch_size=2, seq_len=10, baseline_mb=100.0)
    mb = 2 ** 20
    assert m["weights_mb"] == round((total * 4 + lora * 4) / mb, 1)
    assert m["optimizer_mb"] == round(lora * 8 / mb, 1) and m["gradients_mb"] == round(lora * 4 / mb, 1)
    act = (1 * 10 * 2 * 64 * (34 + 5 * 4 * 10 / 64) * 2 + 2 * 10 * 1000 * 4 * 2) / mb
    assert m["activations_mb"] == round(act, 1)
    assert m["peak_mb"] == pytest.approx(m["formula_mb"] + 100.0, abs=0.11)


# -- the throughput table ------------------------------------------------------------------------------------------

def test_table_rows_round_trip_and_match_by_precision(felix_home):
    row = {"key": row_key("m", "sft", "lora", "cpu-x-2t", "fp32"), "model": "m", "algorithm": "sft",
           "training_type": "lora", "device": "cpu-x-2t", "precision": "fp32", "unit": "samples", "units_per_s": 10.0}
    write_row(row, felix_home)
    assert read_table(felix_home)[row["key"]] == row
    assert find_row("m", "sft", "lora", "cpu-x-2t", "fp32", felix_home)["matched"] == "exact"
    assert find_row("m", "sft", "lora", "cpu-x-2t", "bf16", felix_home)["matched"] == "precision fp32"
    assert find_row("m", "sft", "full", "cpu-x-2t", "fp32", felix_home) is None


def test_estimate_with_a_table_row_never_imports_torch(ner_home, tmp_path):
    from felix_train.estimate.table import device_name

    spec = tmp_path / "spec.yaml"
    spec.write_text("base_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\n"
                    "engine: {max_length: 20, length_policy: drop, batch_size: 3}\n")
    dev = device_name("cpu")
    write_row({"key": row_key("felix/tiny-gliner2", "sft", "lora", dev, "fp32"), "model": "felix/tiny-gliner2",
               "algorithm": "sft", "training_type": "lora", "device": dev, "precision": "fp32", "unit": "samples",
               "units_per_s": 20.0, "overhead_s": 5.0, "source": "job"}, ner_home)
    (ner_home / "models").mkdir(exist_ok=True)
    code = (f"import sys, json; from felix_train.cli import main; "
            f"rc = main(['--home', {str(ner_home)!r}, 'estimate', '--json', '--device', 'cpu', {str(spec)!r}]); "
            "assert rc == 0, rc; assert not [m for m in ('torch', 'gliner2') if m in sys.modules]")
    # the tiny model must exist (built once, with torch, in the parent)
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model

    resolve_model(get_entry("felix/tiny-gliner2"), ner_home)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    e = json.loads(out.stdout)
    assert e["datasets"]["ner"]["train"]["reasons"] == {REASON_DROPPED: 1}
    assert e["time"]["basis"]["source"] == "job"
    assert e["time"]["wall_s"] == pytest.approx(e["trained_records"] / 20.0 + 5.0, abs=0.1)


def test_the_estimate_says_whether_a_spec_fits_its_budget(felix_home):
    from felix_train.estimate import estimate
    from felix_train.spec import validate_spec

    spec = validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "felix-ner-quickstart"}],
                          "engine": {"max_tokens": 100, "max_time": "2h", "batch_size": 8}})
    e = estimate(spec, probe=False)
    assert e["budget"]["max_tokens"] == {"limit": 100, "predicted": e["trained_records"], "fits": False}
    assert e["budget"]["max_time"]["limit"] == 7200 and e["budget"]["max_time"]["fits"] is None  # no table row
    assert estimate(validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "felix-ner-quickstart"}]}),
                    probe=False)["budget"] is None


def test_the_estimate_shows_how_an_llm_job_splits_its_batches_to_fit(model_store, monkeypatch):
    """The rule the job runs (`perf.micro_batches`): as asked where the batch fits, split where it does not, refused with
    the fix where one example alone cannot fit; DPO pairs count two rows."""
    from felix_train.estimate import estimate
    from felix_train.perf.micro_batches import HEADROOM, MEMORY_LIMIT_ENV
    from felix_train.spec import validate_spec

    monkeypatch.setenv("FELIX_HOME", str(model_store))
    def dpo(batch_size: int):
        return validate_spec({"base_model": "felix/tiny-llm", "datasets": [{"name": "felix-prefs-mini"}],
                              "training_algorithm": "dpo", "rl_config": {}, "engine": {"batch_size": batch_size}})

    spec = dpo(8)
    roomy = estimate(spec, probe=False, device="cpu")["memory"]
    assert roomy["batch_shape"][0] == 16  # 8 pairs = 16 rows
    assert roomy["micro_batches"]["fits"] and roomy["micro_batches"]["splits"] == 1
    # a limit between one pair's need and the whole batch's: the largest dividing micro-batch that fits
    one_pair = estimate(dpo(1), probe=False, device="cpu")["memory"]["peak_mb"]
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str((one_pair + 1) / HEADROOM))
    tight = estimate(spec, probe=False, device="cpu")["memory"]["micro_batches"]
    assert tight["fits"] and tight["splits"] > 1 and tight["micro_batch"] * tight["splits"] == 8
    assert tight["summary"].startswith(f"memory: {tight['splits']} micro-batches of {tight['micro_batch']}")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1")
    none = estimate(spec, probe=False, device="cpu")["memory"]["micro_batches"]
    assert none["fits"] is False and "engine.max_length" in none["error"]
