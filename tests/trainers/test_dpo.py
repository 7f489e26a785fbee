"""LoRA DPO on `felix/tiny-llm`: learning, refused rl_configs, length policy, stop, continue, preemption and resume.

Every job uses the session-wide `model_store` as $FELIX_HOME, so the tiny model is built once;
each test registers its own tiny preference dataset and uses its own job ids.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from felix_train import run_job
from felix_train.catalog import get_entry
from felix_train.checkpoints import CheckpointManager, list_checkpoints, verify_checkpoint
from felix_train.data.registry import DatasetRegistry
from felix_train.jobs import JobFolder
from felix_train.models import resolve_model
from felix_train.reporting import Reporter
from felix_train.spec import validate_spec
from felix_train.trainers.context import ResolvedDataset, ResolvedModel, RunControl, TrainContext
from lm_helpers import Preempted, register, rows, step_losses, when_logged

TINY = "felix/tiny-llm"
GOOD = ["Sure, happy to help.", "Of course, here you go.", "Yes, gladly."]
BAD = ["No. Go away.", "Figure it out yourself.", "I will not."]


# -- data and helpers ------------------------------------------------------------------------------------------

def preference_records(n: int, seed: int = 0, conversational: bool = True) -> list[dict]:
    """Short requests; the chosen reply is always polite, the rejected one rude: easy for a tiny model to prefer."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        ask = rng.choice(["Please add {a} and {b}.", "Can you help me with {a} plus {b}?", "What is {a} plus {b}?"])
        prompt, chosen, rejected = ask.format(a=a, b=b), rng.choice(GOOD), rng.choice(BAD)
        if conversational:
            out.append({"prompt": [{"role": "user", "content": prompt}],
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}]})
        else:
            out.append({"prompt": f"Q: {prompt}\nA:", "chosen": f" {chosen}", "rejected": f" {rejected}"})
    return out


def spec(dataset: str, rl: dict | None = None, **engine) -> dict:
    eng = {"batch_size": 4, "logging_steps": 1, "max_length": 64, "seed": 7, "report_to": [], **engine}
    return {"base_model": TINY, "datasets": [{"name": dataset}], "training_algorithm": "dpo",
            "rl_config": {"beta": 0.1, **(rl or {})}, "learning_rate": 1e-2, "num_epochs": 1, "engine": eng}


def make_ctx(home: Path, job_id: str, data: dict) -> TrainContext:
    """A TrainContext built by hand (what the runner builds), to reach the trainer's parts directly."""
    resolved = validate_spec(data, home=home)
    entry = resolved.entry()
    job = JobFolder(job_id, home)
    job.create()
    registry = DatasetRegistry(home)
    datasets = [ResolvedDataset(name=d.name, path=registry.data_path(d.name), format="preference",
                                num_records=registry.get(d.name).num_records) for d in resolved.datasets]
    return TrainContext(
        spec=resolved, job=job, reporter=Reporter(job, echo=False), control=RunControl(job),
        checkpoints=CheckpointManager(job, base_model=entry.id, training_type="lora", family=entry.family.value,
                                      best_metric="eval_rewards/accuracies"),
        model=ResolvedModel(entry=entry, path=resolve_model(entry, home)), train_data=datasets, eval_data=None,
    )


def assert_nothing_trained(job: JobFolder) -> None:
    assert not list_checkpoints(job) and not job.model_dir.exists()
    assert not job.metrics_path.exists() or '"loss"' not in job.metrics_path.read_text()


# -- tests -----------------------------------------------------------------------------------------------------

def test_preference_accuracy_rises_and_the_model_exports(model_store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    home = model_store
    name = register(home, tmp_path, "dpo-learn", preference_records(32, seed=1))
    # evaluated on the training pairs themselves, every 6 steps
    code = run_job(spec(name, max_steps=18, save_steps=6, eval={"dataset": name, "steps": 6}, export={"merged": True}),
                   job_id="dpo-learn", home=home)
    job = JobFolder("dpo-learn", home)
    status = job.read_status()
    assert code == 0, status.get("error")

    logged = rows(job)
    train = {r["step"]: r for r in logged if "rewards/accuracies" in r}
    evals = {r["step"]: r for r in logged if "eval_rewards/accuracies" in r}
    assert sorted(train) == list(range(1, 19)) and sorted(evals) == [6, 12, 18]
    assert train[1]["rewards/accuracies"] == 0.0  # step 1: the policy is the reference, no preference yet
    assert evals[18]["eval_rewards/accuracies"] > 0.5
    assert evals[18]["eval_rewards/margins"] > evals[6]["eval_rewards/margins"] > 0

    metrics = status["metrics"]
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected",
                "eval_loss", "train_loss", "train_runtime_s", "rewards/accuracies", "num_tokens"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["eval_rewards/accuracies"] == evals[18]["eval_rewards/accuracies"] > 0.5
    assert metrics["eval_rewards/chosen"] > metrics["eval_rewards/rejected"]
    assert metrics["steps"] == 18 and metrics["records_per_dataset"] == {name: 32}

    # every checkpoint carries its eval accuracy; the best one is kept by retention
    checkpoints = list_checkpoints(job)
    assert all("eval_rewards/accuracies" in m.metrics for m in checkpoints)
    assert verify_checkpoint(job.checkpoints_dir / checkpoints[-1].uuid) == []
    log = job.log_path.read_text()
    assert "reference = the base model (adapter disabled)" in log
    assert "generation before training:" in log and "generation after training:" in log

    # the adapter loads onto the base with plain PEFT, the merged model with plain transformers: same logits
    base = resolve_model(get_entry(TINY), home)
    ids = torch.tensor([[1, 20, 30, 40, 2]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), job.model_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(job.model_dir / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-4)
    assert (job.model_dir / "chat_template.jinja").exists() and not (job.model_dir / "training_args.bin").exists()


def test_no_second_model_the_reference_is_the_adapter_disabled(model_store, tmp_path):
    from felix_train.trainers import dpo
    from felix_train.trainers.hf_bridge import FelixCallback
    from felix_train.trainers.lm_common import load_tokenizer, setup_lora_model

    home = model_store
    name = register(home, tmp_path, "dpo-ref", preference_records(8, seed=2, conversational=False))
    ctx = make_ctx(home, "dpo-ref", spec(name, rl={"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
                                         eval={"fraction": 0}))
    raw, _ = dpo._setup_data(ctx)
    model, peft_config = setup_lora_model(ctx)
    trainer = dpo.build_trainer(ctx, model, peft_config, load_tokenizer(ctx), raw, None, FelixCallback(ctx))
    assert trainer.ref_model is None and type(trainer.model).__name__ == "PeftModelForCausalLM"
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, 0.5]
    assert trainer.args.max_length == 64 and trainer.beta == 0.1
    # text pairs got EOS; the prompt is not in the completion
    row = trainer.train_dataset[0]
    assert row["chosen_ids"][-1] == trainer.processing_class.eos_token_id
    assert trainer.processing_class.decode(row["prompt_ids"]).startswith("Q: ")


REFUSED = [
    # (rl_config, loc, type or types): every one refused before any training, exit 2
    ({"betta": 0.1}, ["rl_config", "betta"], "extra_forbidden"),
    ({"beta": 0}, ["rl_config", "beta"], "greater_than"),
    ({"loss_type": "dpo++"}, ["rl_config", "loss_type"], "literal_error"),
    ({"label_smoothing": 0.5}, ["rl_config", "label_smoothing"], "less_than"),
    ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, ["rl_config"], "value_error"),
    ({"truncation_mode": "middle"}, ["rl_config", "truncation_mode"], "literal_error"),
    ({"max_length": 4}, ["rl_config", "max_length"], "greater_than_equal"),
    # TRL 1.16 rules the DPO trainer checks before it loads anything (pydantic's types once rl_config checks them)
    ({"loss_type": "exo_pair"}, ["rl_config", "label_smoothing"], {"label_smoothing_required", "value_error"}),
    ({"loss_type": "aot", "use_weighting": True}, ["rl_config", "use_weighting"],
     {"use_weighting_unsupported", "value_error"}),
    ({"loss_type": "aot_pair"}, ["rl_config", "loss_type"], {"loss_type_unsupported", "literal_error"}),
]


@pytest.mark.parametrize("case", range(len(REFUSED)), ids=[f"{list(r)[-1]}-{t if isinstance(t, str) else min(t)}"
                                                        for r, _, t in REFUSED])
def test_invalid_rl_config_is_refused_before_training(model_store, tmp_path, case):
    rl, loc, typ = REFUSED[case]
    types = {typ} if isinstance(typ, str) else typ
    home = model_store
    name = register(home, tmp_path, "dpo-refused", preference_records(4, seed=3))
    job_id = f"dpo-refused-{case}"
    assert run_job(spec(name, rl=rl), job_id=job_id, home=home) == 2
    job = JobFolder(job_id, home)
    status = job.read_status()
    assert status["status"] == "failed"
    assert [e for e in status["error"]["errors"] if e["loc"][:len(loc)] == loc and e["type"] in types], status["error"]
    assert_nothing_trained(job)


def test_rl_config_is_required(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "dpo-no-rl", preference_records(4, seed=3))
    data = spec(name)
    del data["rl_config"]
    assert run_job(data, job_id="dpo-no-rl", home=home) == 2
    error = JobFolder("dpo-no-rl", home).read_status()["error"]
    assert error["errors"][0]["loc"] == ["rl_config"] and error["errors"][0]["type"] == "rl_config_required"


@pytest.mark.parametrize("policy", ["error", "drop", "truncate"])
def test_length_policy_on_tokenized_pairs(model_store, tmp_path, policy):
    home = model_store
    records = preference_records(8, seed=4)
    for i in (1, 5):  # lines 2 and 6: a long chosen reply
        records[i]["chosen"][0]["content"] = "Sure, " + " ".join(["really"] * 60) + " happy to help."
    name = register(home, tmp_path, f"dpo-long-{policy}", records)
    job_id = f"dpo-long-{policy}"
    code = run_job(spec(name, length_policy=policy, max_steps=1, eval={"fraction": 0}), job_id=job_id, home=home)
    status = JobFolder(job_id, home).read_status()
    if policy == "error":
        assert code == 3
        message = status["error"]["message"]
        assert "2 training pair(s) are longer than the DPO max_length (64 tokens" in message
        assert f"{name} line 2: " in message and f"{name} line 6: " in message
        assert [e["loc"][1:] for e in status["error"]["errors"]] == [[name, 2], [name, 6]]
        return
    assert code == 0, status.get("error")
    metrics = status["metrics"]
    if policy == "drop":
        assert (metrics["num_dropped"], metrics["num_truncated"], metrics["num_train_records"]) == (2, 0, 6)
    else:
        assert (metrics["num_dropped"], metrics["num_truncated"], metrics["num_train_records"]) == (0, 2, 8)


def test_mixing_text_and_conversational_pairs_is_refused(model_store, tmp_path):
    home = model_store
    text = register(home, tmp_path, "dpo-text", preference_records(4, seed=5, conversational=False))
    chat = register(home, tmp_path, "dpo-chat", preference_records(4, seed=5))
    data = spec(text)
    data["datasets"] = [{"name": text}, {"name": chat}]
    assert run_job(data, job_id="dpo-mixed", home=home) == 3
    message = JobFolder("dpo-mixed", home).read_status()["error"]["message"]
    assert "mix text" in message and f"{text} line 1" in message and f"{chat} line 1" in message


def test_stop_request_checkpoints_and_cancels_then_a_new_job_continues_the_adapter(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "dpo-stop", preference_records(64, seed=6))
    job = JobFolder("dpo-stop", home)
    when_logged(job, job.request_stop)
    code = run_job(spec(name, batch_size=2, eval={"fraction": 0}), job_id="dpo-stop", home=home)
    status = job.read_status()
    assert code == 4, status
    assert status["status"] == "cancelled" and not job.stop_path.exists()
    (checkpoint,) = list_checkpoints(job)
    assert 1 <= checkpoint.step < 32 and checkpoint.training_algorithm == "dpo"
    assert verify_checkpoint(job.checkpoints_dir / checkpoint.uuid) == []
    assert "stop requested at step" in job.log_path.read_text() and not job.model_dir.exists()

    # its UUID is a base model: DPO goes on from that adapter, against a frozen copy of it as the reference
    code = run_job({**spec(name, max_steps=2, eval={"fraction": 0}), "base_model": checkpoint.uuid},
                   job_id="dpo-continue", home=home)
    follow = JobFolder("dpo-continue", home)
    assert code == 0, follow.read_status().get("error")
    log = follow.log_path.read_text()
    assert f"continuing the LoRA adapter of checkpoint {checkpoint.uuid}" in log
    assert "reference = the continued adapter, frozen" in log
    first = rows(follow)[0]
    assert first["rewards/accuracies"] == 0.0 and first["rewards/margins"] == 0.0  # policy == reference at step 1
    assert (follow.model_dir / "adapter_model.safetensors").exists() and not (follow.model_dir / "ref").exists()


def test_sigterm_then_resume_reproduces_the_uninterrupted_losses(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "dpo-resume", preference_records(24, seed=8))
    # gradient accumulation, two epochs, eval each epoch: all must resume exactly
    data = spec(name, batch_size=2, gradient_accumulation_steps=2, eval={"fraction": 0.15})
    data["num_epochs"] = 2

    assert run_job(data, job_id="dpo-uninterrupted", home=home) == 0
    reference = JobFolder("dpo-uninterrupted", home)

    preempted = Preempted(home, tmp_path, data, "dpo-preempted", total_steps=max(step_losses(reference)))  # SIGTERM → 75, one checkpoint
    job, interrupted = preempted.job, preempted.checkpoint
    preempted.rerun()
    log = job.log_path.read_text()
    assert f"resuming training at step {interrupted.step}" in log
    assert log.count("generation before training:") == 1

    assert step_losses(job) == step_losses(reference)  # every step, exactly
    ref_metrics, metrics = reference.read_status()["metrics"], job.read_status()["metrics"]
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "train_loss"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-9, abs=1e-12), key


def test_dpo_reports_tokens_per_s_and_mfu_with_the_reference_forward_counted(model_store, tmp_path, monkeypatch):
    import felix_train.perf.peak

    monkeypatch.setattr(felix_train.perf.peak, "device_peak_flops", lambda *a, **k: 5e10)
    home = model_store
    name = register(home, tmp_path, "dpo-mfu", preference_records(12, seed=4))
    code = run_job(spec(name, max_steps=3, eval={"fraction": 0}), job_id="dpo-mfu", home=home)
    job = JobFolder("dpo-mfu", home)
    status = job.read_status()
    assert code == 0, status.get("error")
    for row in (r for r in rows(job) if "loss" in r):
        assert row["tokens_per_s"] > 0 and row["achieved_tflops"] > 0 and row["mfu"] > 0, row
    metrics = status["metrics"]
    assert metrics["train_tokens_per_s"] > 0 and metrics["train_mfu"] > 0 and metrics["precision"] == "fp32"
    assert "reference [forward" in metrics["flops_formula"]  # the policy's pass and the reference's forward
    assert metrics["flops_per_token"] > 0 and metrics["peak_tflops"] == 0.05
    assert status["progress"]["mfu"] > 0
