"""Tiny trained jobs for the eval tests, each trained once per session in the shared `model_store`.

A GLiNER2 LoRA job on `felix/tiny-gliner2`, and LoRA SFT, DPO and GRPO jobs on `felix/tiny-llm`, a few steps
each: enough for a real `model/` folder, not for good figures. Jobs run through `run_job` as a user's would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_helpers import LLM_ENGINE, chat_records, ner_records, preference_records, prompt_records, train


@pytest.fixture(scope="session")
def eval_home(model_store, tmp_path_factory) -> Path:
    """The shared $FELIX_HOME the jobs below live in; pytest.importorskip keeps CPU-less installs clean."""
    pytest.importorskip("torch")
    return model_store


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval-data")


@pytest.fixture(scope="session")
def ner_job(eval_home, data_dir) -> str:
    pytest.importorskip("gliner2")
    return train(eval_home, data_dir, "eval-ner", ner_records(24), {
        "base_model": "felix/tiny-gliner2", "training_type": "lora", "learning_rate": 5e-3, "num_epochs": 1,
        "engine": {"batch_size": 8, "logging_steps": 1, "report_to": [], "eval": {"fraction": 0},
                   "lora": {"r": 4}}})


@pytest.fixture(scope="session")
def sft_job(eval_home, data_dir) -> str:
    return train(eval_home, data_dir, "eval-sft", chat_records(8), {
        "base_model": "felix/tiny-llm", "learning_rate": 1e-2, "num_epochs": 1,
        "engine": {**LLM_ENGINE, "max_steps": 2}})


@pytest.fixture(scope="session")
def dpo_job(eval_home, data_dir) -> str:
    return train(eval_home, data_dir, "eval-dpo", preference_records(8), {
        "base_model": "felix/tiny-llm", "training_algorithm": "dpo", "rl_config": {"beta": 0.2},
        "learning_rate": 1e-2, "num_epochs": 1, "engine": {**LLM_ENGINE, "max_steps": 2}})


@pytest.fixture(scope="session")
def grpo_job(eval_home, data_dir) -> str:
    rl = {"reward_type": [{"type": "contains", "column": "word"}], "num_generations": 4,
          "max_completion_length": 8, "temperature": 0.15}
    return train(eval_home, data_dir, "eval-grpo", prompt_records(4), {
        "base_model": "felix/tiny-llm", "training_algorithm": "grpo", "rl_config": rl, "learning_rate": 5e-2,
        "num_epochs": 1, "engine": {**LLM_ENGINE, "batch_size": 8, "max_steps": 1, "lora": {"r": 8}}})


@pytest.fixture
def run_eval(eval_home, capsys):
    """`felix-train eval ARGS --json` in this process: (exit code, parsed stdout or None, stderr)."""
    from felix_train.cli import main

    def run(*args: str, json_out: bool = True):
        code = main(["eval", "--home", str(eval_home), *args, *(["--json"] if json_out else [])])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if json_out and out.strip() else out), err

    return run
