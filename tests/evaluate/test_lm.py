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
