"""Budgets (`engine.max_time`, `engine.max_tokens`) on real tiny jobs: GLiNER2 and LoRA SFT.

A budget ends a job at a step boundary, `complete`, with a checkpoint, an exported model that loads with its
own library, `stopped_by` in the metrics, a `budget_reached` event and a log line; the used time and tokens
travel in the checkpoint, so a resumed job keeps counting. Budgets here are in tokens/samples (exact) or a
time no step can stay under (0.001 s), never a wall-clock race.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gliner2")

from felix_train.checkpoints import list_checkpoints  # noqa: E402
from felix_train.events import read_events  # noqa: E402
from felix_train.jobs import JobFolder  # noqa: E402
from felix_train.runner import ExitCode, run_job  # noqa: E402
from felix_train.trainers.context import RunControl, StopReason  # noqa: E402
from lm_helpers import register  # noqa: E402

TEMPLATES = ["{p} works at {c} in {l} .", "{p} joined {c} last year .", "{c} opened a new office in {l} .",
             "the weather was good today ."]


def ner_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.choice(TEMPLATES)
        p, c, loc = rng.choice(["John Smith", "Mary Jones"]), rng.choice(["Google", "Intel"]), rng.choice(["Paris", "Rome"])
        ents = {k: [v] for k, v, key in (("person", p, "{p}"), ("company", c, "{c}"), ("location", loc, "{l}"))
                if key in t}
        out.append({"input": t.format(p=p, c=c, l=loc), "output": {"entities": ents or {"person": []}}})
    return out


@pytest.fixture
def home(model_store, tmp_path, monkeypatch):
    monkeypatch.setenv("FELIX_HOME", str(model_store))
    torch.set_num_threads(1)
    register(model_store, tmp_path, "budget-ner", ner_records(40))
    return model_store


def g2_spec(training_type: str = "full", **engine) -> dict:
    # 40 records, 8 held out: 32 train records = 4 steps of 8 per epoch, 3 epochs = 12 steps
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "budget-ner"}], "training_type": training_type,
            "learning_rate": 5e-3, "num_epochs": 3,
            "engine": {"batch_size": 8, "logging_steps": 1, "report_to": [], "eval": {"fraction": 0.2,
                                                                                          "split": "random"}, **engine}}


def budget_events(job: JobFolder) -> list[dict]:
    return read_events(job.root, types={"budget_reached"})


def test_gliner2_max_tokens_counts_samples_and_ends_complete_with_a_loadable_model(home):
    from gliner2 import GLiNER2

    job = JobFolder("budget-g2-tokens", home)
    code = run_job(g2_spec(max_tokens=20), job_id=job.id, home=home)
    status = job.read_status()
    assert code == ExitCode.COMPLETE, status.get("error")
    assert status["status"] == "complete"
    metrics = status["metrics"]
    assert metrics["stopped_by"] == "max_tokens"
    assert metrics["global_step"] == 3 and metrics["trained_tokens"] == 24  # 3 steps × 8 samples ≥ 20
    assert status["trained_tokens"] == 24 and status["estimated_finish"] is None
    assert status["hyperparameters"]["max_tokens"] == 20 and status["hyperparameters"]["batch_size"] == 8
    assert status["progress"]["step"] == 3 and status["progress"]["total_steps"] == 12
    assert list_checkpoints(job)[-1].step == 3
    assert [e["data"] for e in budget_events(job)] == [{"budget": "max_tokens", "limit": 20, "used": 24}]
    assert budget_events(job)[0]["step"] == 3
    assert "budget max_tokens reached at step 3 (24 of 20 samples)" in job.log_path.read_text()
    model = GLiNER2.from_pretrained(str(job.model_dir))  # stock gliner2, no felix code
    assert model.extract_entities("John Smith works at Google in Paris .", ["person"]) is not None


def test_gliner2_max_time_stops_a_lora_job_at_its_first_step_and_exports_the_merged_model(home):
    from gliner2 import GLiNER2

    job = JobFolder("budget-g2-time", home)
    code = run_job(g2_spec("lora", max_time="0.001s", lora={"r": 4}), job_id=job.id, home=home)
    status = job.read_status()
    assert code == ExitCode.COMPLETE, status.get("error")
    assert status["metrics"]["stopped_by"] == "max_time" and status["metrics"]["global_step"] == 1
    assert status["hyperparameters"]["max_time"] == 0.001 and status["hyperparameters"]["lora"]["r"] == 4
    (event,) = budget_events(job)
    assert event["data"]["budget"] == "max_time" and event["data"]["limit"] == 0.001
    assert event["data"]["used"] >= 0.001
    assert list_checkpoints(job)[-1].step == 1
    assert "eval_f1" in status["metrics"]  # evaluated at the stop, as at a last step
    GLiNER2.from_pretrained(str(job.model_dir / "merged"))
    progress = status["progress"]
    assert progress["samples_per_s"] > 0 and progress["trained_tokens"] == 8


def _stop_at_check(monkeypatch, n: int) -> None:
    """The n-th step-boundary check asks for a stop (a user's stop request, deterministically)."""
    calls = {"n": 0}
    original = RunControl.check

    def check(self):
        calls["n"] += 1
        return StopReason.STOP if calls["n"] == n else original(self)

    monkeypatch.setattr(RunControl, "check", check)


def test_gliner2_budget_survives_a_resume(home, monkeypatch):
    job = JobFolder("budget-g2-resume", home)
    with monkeypatch.context() as m:
        _stop_at_check(m, 2)
        assert run_job(g2_spec(max_tokens=40), job_id=job.id, home=home) == ExitCode.CANCELLED
    assert list_checkpoints(job)[-1].step == 2
    assert run_job(g2_spec(max_tokens=40), job_id=job.id, home=home) == ExitCode.COMPLETE
    metrics = job.read_status()["metrics"]
    assert metrics["stopped_by"] == "max_tokens" and metrics["global_step"] == 5  # 16 before, 24 after the resume
    assert metrics["trained_tokens"] == 40

    # time: the checkpoint's used time counts; a resumed run does not get a fresh budget
    timed = JobFolder("budget-g2-resume-time", home)
    with monkeypatch.context() as m:
        _stop_at_check(m, 2)
        assert run_job(g2_spec(max_time="1h"), job_id=timed.id, home=home) == ExitCode.CANCELLED
    state_path = timed.checkpoints_dir / list_checkpoints(timed)[-1].uuid / "trainer_state.json"
    state = json.loads(state_path.read_text())
    assert 0 < state["runtime_s"] < 3600
    state["runtime_s"] = 3599.999  # as if the first run had trained for an hour
    state_path.write_text(json.dumps(state))
    assert run_job(g2_spec(max_time="1h"), job_id=timed.id, home=home) == ExitCode.COMPLETE
    status = timed.read_status()
    assert status["metrics"]["stopped_by"] == "max_time" and status["metrics"]["global_step"] == 3
    (event,) = budget_events(timed)
    assert event["data"]["used"] >= 3600 and event["step"] == 3


# -- LoRA SFT on the tiny LLM -----------------------------------------------------------------------------------

def chat_records(n: int) -> list[dict]:
    rng = random.Random(3)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        out.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                 {"role": "assistant", "content": f"The answer is {a + b}."}]})
    return out


def sft_spec(name: str, **engine) -> dict:
    return {"base_model": "felix/tiny-llm", "datasets": [{"name": name}], "learning_rate": 1e-2, "num_epochs": 1,
            "engine": {"batch_size": 4, "logging_steps": 1, "max_length": 64, "seed": 7, "report_to": [],
                       "eval": {"fraction": 0}, **engine}}


def test_sft_max_tokens_ends_complete_with_checkpoint_model_and_event(model_store, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    name = register(model_store, tmp_path, "budget-sft", chat_records(32))
    job = JobFolder("budget-sft", model_store)
    with monkeypatch.context() as m:  # a stop after step 1 first: the budget then survives the resume
        _stop_at_check(m, 1)
        assert run_job(sft_spec(name, max_tokens=150), job_id=job.id, home=model_store) == ExitCode.CANCELLED
    first = list_checkpoints(job)[-1]
    saved = json.loads((job.checkpoints_dir / first.uuid / "felix_budget.json").read_text())
    assert first.step == 1 and saved["trained_tokens"] > 0 and saved["train_time_s"] > 0

    code = run_job(sft_spec(name, max_tokens=150), job_id=job.id, home=model_store)
    status = job.read_status()
    assert code == ExitCode.COMPLETE, status.get("error")
    metrics = status["metrics"]
    assert metrics["stopped_by"] == "max_tokens" and 1 < metrics["steps"] < 8  # 8 steps without a budget
    assert 150 <= metrics["trained_tokens"] and status["trained_tokens"] == metrics["trained_tokens"]
    (event,) = budget_events(job)
    assert event["data"]["used"] == metrics["trained_tokens"] and event["step"] == metrics["steps"]
    assert list_checkpoints(job)[-1].step == metrics["steps"]
    assert "budget max_tokens reached at step" in job.log_path.read_text()
    base = AutoModelForCausalLM.from_pretrained(str(model_store / "models" / "felix--tiny-llm"))
    PeftModel.from_pretrained(base, str(job.model_dir))
    assert status["hyperparameters"]["lora"]["r"] == 16 and status["hyperparameters"]["rl_config"] is None
