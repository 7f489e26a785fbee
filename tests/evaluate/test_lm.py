"""`felix-train eval` on decoder-LLM jobs: perplexity (SFT), preference accuracy (DPO), mean reward (GRPO)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval_helpers import chat_records, preference_records, prompt_records, write_jsonl


@pytest.fixture(scope="module")
def files(data_dir) -> dict[str, Path]:
    return {"chats": write_jsonl(data_dir / "lm-chats.jsonl", chat_records(6)),
            "pairs": write_jsonl(data_dir / "lm-pairs.jsonl", preference_records(4)),
            "prompts": write_jsonl(data_dir / "lm-prompts.jsonl", prompt_records(3))}


def test_an_sft_job_gets_loss_and_perplexity_on_the_replies(sft_job, files, run_eval):
    code, report, _ = run_eval(sft_job, str(files["chats"]))
    assert code == 0
    assert report["eval"] == "sft_perplexity" and report["format"] == "messages"
    assert report["model"]["kind"] == "job" and report["model"]["adapter"].endswith("model")
    assert report["scored"] == "replies / completions" and report["records"] == 6
    assert report["tokens"] > 0 and report["perplexity"] == pytest.approx(math.exp(report["loss"]), rel=1e-3)
    assert 0.0 <= report["token_accuracy"] <= 1.0
    assert report["by_format"]["messages"]["tokens"] == report["tokens"]

    code, base, _ = run_eval("felix/tiny-llm", str(files["chats"]))
    assert code == 0 and base["model"]["kind"] == "catalog" and base["tokens"] == report["tokens"]
    assert report["loss"] < base["loss"]  # two steps on these very chats already help


def test_a_dpo_job_gets_preference_accuracies_against_its_base(dpo_job, files, run_eval):
    code, report, _ = run_eval(dpo_job, str(files["pairs"]))
    assert code == 0
    assert report["eval"] == "dpo_preference" and report["format"] == "preference"
    assert report["reference"] == "base (adapter disabled)" and report["beta"] == 0.2  # the job's own beta
    assert report["pairs"] == 4
    for key in ("reward_accuracy", "logp_accuracy", "ref_logp_accuracy", "length_normalized_accuracy"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["reward_margin"] == pytest.approx(report["reward_chosen"] - report["reward_rejected"], abs=1e-5)
    assert report["reward_accuracy"] > 0  # the adapter moved: rewards are not all 0 ties
    assert report["ties"] < 4


def test_a_grpo_job_gets_its_own_rewards_mean(grpo_job, files, run_eval):
    code, report, _ = run_eval(grpo_job, str(files["prompts"]))
    assert code == 0
    assert report["eval"] == "grpo_reward" and report["format"] == "prompt"
    assert report["problems"] == 3 and report["max_new_tokens"] == 8  # the job's max_completion_length
    assert list(report["rewards"]) == ["contains"]  # the job's reward_type, not numeric_match
    assert report["reward_mean"] == pytest.approx(report["rewards"]["contains"]["mean"])
    assert report["numeric_judged"] == 3 and 0.0 <= report["numeric_accuracy"] <= 1.0
    assert len(report["samples"]) == 3


def test_eval_and_serving_load_an_llm_job_through_the_one_loader(sft_job, eval_home):
    """`felix_train.models.lm_loader` is the one loader: eval gets the adapter on its base, serving the same
    adapter (no `merged/` here) with the same tokenizer, so both score a text alike."""
    import torch

    from felix_train.evaluate.lm import load_causal_lm
    from felix_train.models.lm_loader import causal_lm_source
    from felix_train.models.source import resolve_source
    from felix_train.service.serving.predictors import load_predictor

    job_dir = eval_home / "jobs" / sft_job
    ref = resolve_source(job_dir, home=eval_home)
    model, tokenizer = load_causal_lm(ref, "cpu")
    predictor = load_predictor(job_dir, home=eval_home, device="cpu", dtype="fp32")
    assert causal_lm_source(ref) == ref.adapter == predictor.source == job_dir / "model"
    assert type(model).__name__ == type(predictor.model).__name__ == "PeftModelForCausalLM"
    assert tokenizer.pad_token is not None and predictor.tokenizer.get_vocab() == tokenizer.get_vocab()
    ids = torch.tensor([tokenizer("What is 2 plus 2?")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, predictor.model(input_ids=ids).logits)


def test_which_folder_the_llm_loader_loads(tmp_path):
    """Eval scores the adapter (its base is the adapter disabled); serving prefers the `merged/` export."""
    from dataclasses import replace

    from felix_train.errors import FelixError
    from felix_train.models.lm_loader import causal_lm_source
    from felix_train.models.source import resolve_source

    model = tmp_path / "model"
    (model / "merged").mkdir(parents=True)
    (model / "adapter_config.json").write_text('{"base_model_name_or_path": "felix/tiny-llm"}')
    (model / "merged" / "config.json").write_text('{"model_type": "llama"}')
    ref = resolve_source(model)
    assert causal_lm_source(ref) == model and causal_lm_source(ref, prefer_merged=True) == model / "merged"
    (model / "adapter_config.json").unlink()
    assert causal_lm_source(resolve_source(model)) == model / "merged"  # no adapter: the full weights
    with pytest.raises(FelixError, match="holds neither a PEFT adapter"):
        causal_lm_source(replace(ref, weights=None, adapter=None))
