"""LoRA GRPO on `felix/tiny-llm`: the reward rises, its metrics are reported, refused rl_configs, stop, resume.

Every job uses the session-wide `model_store` as $FELIX_HOME, so the tiny model is built once;
each test registers its own tiny prompt dataset and uses its own job ids.

The tiny model's tied embeddings are small (init std 0.02), so its logits span about ±1.3 whatever the
adapter learns: at temperature 1 no token can become likely. Sampling at a low temperature (0.15) lets
the policy the adapter learns show in the completions, and so in the reward.
"""

from __future__ import annotations

import importlib.util

import pytest

from felix_train import run_job
from felix_train.checkpoints import list_checkpoints, verify_checkpoint
from felix_train.jobs import JobFolder
from lm_helpers import Preempted, register, rows, when_logged

TINY = "felix/tiny-llm"
ASKS = ["Say something.", "Tell me a fact.", "Write a word.", "Greet me.", "Name a colour.", "Describe the sky.",
        "What is two plus two?", "Give me a tip."]


# -- data and helpers ------------------------------------------------------------------------------------------

def prompt_records(n: int = 8, conversational: bool = True) -> list[dict]:
    """Short requests, each with a `word` column (read by the `contains` reward) and an `answer` column."""
    out = []
    for i in range(n):
        ask = ASKS[i % len(ASKS)]
        out.append({"prompt": [{"role": "user", "content": ask}] if conversational else ask,
                    "word": "the", "answer": str(i)})
    return out


def spec(dataset: str, rl: dict | None = None, **engine) -> dict:
    """4 prompts × 8 completions of ≤ 12 tokens per step; `contains` rewards completions holding the row's `word`."""
    rl_config = {"reward_type": [{"type": "contains", "column": "word"}], "num_generations": 8,
                 "max_completion_length": 12, "temperature": 0.15, **(rl or {})}
    eng = {"batch_size": 32, "logging_steps": 1, "seed": 3, "report_to": [], "eval": {"fraction": 0},
           "lora": {"r": 8, "dropout": 0.0}, **engine}
    return {"base_model": TINY, "datasets": [{"name": dataset}], "training_algorithm": "grpo",
            "rl_config": rl_config, "learning_rate": 5e-2, "num_epochs": 100, "engine": eng}


def spy_reward(monkeypatch) -> dict:
    """Every `custom` reward becomes a spy scoring 0 that records the prompts and columns TRL hands it."""
    from felix_train import rewards

    seen: dict = {"prompts": [], "columns": {}}

    def spy(completions, prompts=None, **columns):
        seen["prompts"].extend(prompts)
        seen["columns"].update(columns)
        return [0.0] * len(completions)

    monkeypatch.setattr(rewards, "_load_function", lambda ref: spy)
    return seen


# -- tests -----------------------------------------------------------------------------------------------------

def test_reward_rises_and_every_grpo_metric_is_reported(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-learn", prompt_records())
    code = run_job(spec(name, max_steps=16, save_steps=8), job_id="grpo-learn", home=home)
    job = JobFolder("grpo-learn", home)
    status = job.read_status()
    assert code == 0, status.get("error")

    logged = [r for r in rows(job) if "reward" in r]
    assert [r["step"] for r in logged] == list(range(1, 17))
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio",
                "rewards/contains/mean", "rewards/contains/std", "entropy"):
        assert all(isinstance(r.get(key), (int, float)) for r in logged), key
    reward = [r["reward"] for r in logged]
    first, last = sum(reward[:4]) / 4, sum(reward[-4:]) / 4
    assert last > first + 0.3, f"the reward did not rise: {first:.3f} -> {last:.3f} ({reward})"

    metrics = status["metrics"]
    assert metrics["reward"] == logged[-1]["reward"]
    assert metrics["rewards/contains/mean"] == logged[-1]["rewards/contains/mean"]
    assert metrics["reward_over_training"] == pytest.approx(sum(reward) / 16)
    for key in ("rewards/contains/mean_over_training", "completions/mean_length",
                "completions/mean_length_over_training", "completions/clipped_ratio", "frac_reward_zero_std",
                "train_loss", "train_runtime_s", "num_tokens"):
        assert isinstance(metrics[key], (int, float)), key
    assert "kl" not in metrics  # beta 0: no reference, no KL
    assert metrics["steps"] == 16 and metrics["records_per_dataset"] == {name: 8}

    # checkpoints carry the reward (the best-checkpoint metric) and verify; the adapter is exported
    checkpoints = list_checkpoints(job)
    assert [m.step for m in checkpoints] == [8, 16] and all("reward" in m.metrics for m in checkpoints)
    assert verify_checkpoint(job.checkpoints_dir / checkpoints[-1].uuid) == []
    assert (job.model_dir / "adapter_model.safetensors").exists()


def test_weighted_rewards_and_kl_are_logged(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-weights", prompt_records())
    rl = {"reward_type": [{"type": "contains", "column": "word", "weight": 1.0},
                          {"type": "length_penalty", "target_length": 40, "weight": 0.25}], "beta": 0.04}
    code = run_job(spec(name, rl, max_steps=3, batch_size=8), job_id="grpo-weights", home=home)
    job = JobFolder("grpo-weights", home)
    status = job.read_status()
    assert code == 0, status.get("error")
    logged = [r for r in rows(job) if "reward" in r]
    for r in logged:  # the logged reward is the weighted sum of the two
        assert r["reward"] == pytest.approx(r["rewards/contains/mean"] + 0.25 * r["rewards/length_penalty/mean"],
                                            abs=1e-5)
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the reference
    assert logged[-1]["kl"] > 0
    metrics = status["metrics"]
    assert metrics["kl"] == logged[-1]["kl"]
    for key in ("rewards/contains/mean", "rewards/length_penalty/mean", "rewards/length_penalty/mean_over_training"):
        assert isinstance(metrics[key], (int, float)), key
    log = job.log_path.read_text()
    assert "rewards contains×1, length_penalty×0.25" in log and "beta 0.04" in log


def test_reward_functions_get_the_data_columns_only(model_store, tmp_path, monkeypatch):
    """TRL hands every column but `prompt` to the rewards: felix's bookkeeping columns must not reach them."""
    seen = spy_reward(monkeypatch)["columns"]
    home = model_store
    name = register(home, tmp_path, "grpo-columns", prompt_records(conversational=False))
    rl = {"reward_type": [{"type": "custom", "function": "tests.spy:reward", "columns": ["answer"]}]}
    code = run_job(spec(name, rl, max_steps=1, batch_size=8), job_id="grpo-columns", home=home)
    assert code == 0, JobFolder("grpo-columns", home).read_status().get("error")
    assert set(seen) == {"word", "answer"}  # not felix's `source` / `line`, nor TRL's extras
    assert len(seen["answer"]) == 8 and set(seen["answer"]) <= {str(i) for i in range(8)}


DROP = object()
"""In a REFUSED rl_config: leave this key out of the base rl_config."""

REFUSED = [
    # (changes to the rl_config, or None to leave it out; engine; loc; type): refused before any training, exit 2
    (None, {}, ["rl_config"], "rl_config_required"),
    ({"reward_type": DROP}, {}, ["rl_config", "reward_type"], "reward_type_required"),
    ({"reward_type": "accuracy"}, {}, ["rl_config", "reward_type"], "unknown_reward_type"),
    ({"reward_type": [{"type": "exact_match", "column": "solution"}]}, {}, ["rl_config", "reward_type", 0, "column"],
     "reward_column_missing"),
    ({"reward_type": [{"type": "contains"}]}, {}, ["rl_config", "reward_type", 0], "value_error"),
    ({"num_generations": 1}, {}, ["rl_config", "num_generations"], "greater_than_equal"),
    ({"num_generations": 3}, {"batch_size": 4}, ["engine", "batch_size"], "batch_not_divisible"),
    ({"num_generations": 4, "generation_batch_size": 10}, {"batch_size": 4}, ["rl_config", "generation_batch_size"],
     "batch_not_divisible"),
    ({"generation_batch_size": 32, "steps_per_generation": 2}, {}, ["rl_config"], "value_error"),
    ({"epsilon": 0.2, "epsilon_high": 0.1}, {}, ["rl_config", "epsilon_high"], "value_error"),
    ({"temperature": 0}, {}, ["rl_config", "temperature"], "greater_than"),
    ({"top_p": 1.5}, {}, ["rl_config", "top_p"], "less_than_equal"),
    ({"loss_type": "ppo"}, {}, ["rl_config", "loss_type"], "literal_error"),
    ({"scale_rewards": "yes"}, {}, ["rl_config", "scale_rewards"], "literal_error"),
    ({"num_generation": 8}, {}, ["rl_config", "num_generation"], "extra_forbidden"),
]


@pytest.mark.parametrize("case", range(len(REFUSED)), ids=[t for *_, t in REFUSED])
def test_invalid_rl_config_is_refused_before_training(model_store, tmp_path, case):
    rl, engine, loc, typ = REFUSED[case]
    home = model_store
    name = register(home, tmp_path, "grpo-refused", prompt_records())
    data = spec(name, **engine)
    if rl is None:
        del data["rl_config"]
    else:
        data["rl_config"] = {k: v for k, v in {**data["rl_config"], **rl}.items() if v is not DROP}
    job_id = f"grpo-refused-{case}"
    assert run_job(data, job_id=job_id, home=home) == 2
    job = JobFolder(job_id, home)
    status = job.read_status()
    assert status["status"] == "failed"
    assert [e for e in status["error"]["errors"] if e["loc"][:len(loc)] == loc and e["type"] == typ], status["error"]
    assert not list_checkpoints(job) and not job.model_dir.exists() and not job.metrics_path.exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_is_refused_on_the_worker(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-vllm", prompt_records())
    assert run_job(spec(name, {"use_vllm": True}), job_id="grpo-vllm", home=home) == 2
    job = JobFolder("grpo-vllm", home)
    (error,) = job.read_status()["error"]["errors"]
    assert error["loc"] == ["rl_config", "use_vllm"] and "pip install vllm" in error["msg"]
    assert not list_checkpoints(job) and not job.model_dir.exists()


@pytest.mark.parametrize("policy", ["error", "drop"])
def test_long_prompts_follow_the_length_policy(model_store, tmp_path, policy):
    home = model_store
    records = prompt_records()
    for i in (2, 5):  # lines 3 and 6
        records[i]["prompt"][0]["content"] = "Please " + " ".join(["really"] * 80) + " say something."
    name = register(home, tmp_path, f"grpo-long-{policy}", records)
    job_id = f"grpo-long-{policy}"
    code = run_job(spec(name, length_policy=policy, max_length=64, max_steps=1, batch_size=8), job_id=job_id,
                   home=home)
    status = JobFolder(job_id, home).read_status()
    if policy == "error":
        assert code == 3
        message = status["error"]["message"]
        assert "2 training prompt(s) are longer than engine.max_length (64 tokens)" in message
        assert [e["loc"][1:] for e in status["error"]["errors"]] == [[name, 3], [name, 6]]
        return
    assert code == 0, status.get("error")
    assert status["metrics"]["num_dropped"] == 2 and status["metrics"]["records_per_dataset"] == {name: 6}


def test_mixing_text_and_conversational_prompts_is_refused_without_the_chat_template(model_store, tmp_path):
    home = model_store
    text = register(home, tmp_path, "grpo-text", prompt_records(conversational=False))
    chat = register(home, tmp_path, "grpo-chat", prompt_records())
    data = spec(text, {"chat_template": False})
    data["datasets"] = [{"name": text}, {"name": chat}]
    assert run_job(data, job_id="grpo-mixed", home=home) == 3
    message = JobFolder("grpo-mixed", home).read_status()["error"]["message"]
    assert f"mix text ({text} line 1) and conversational ({chat} line 1)" in message


@pytest.mark.parametrize("chat_template", [True, False])
def test_text_prompts_are_asked_through_the_chat_template_unless_turned_off(model_store, tmp_path, monkeypatch,
                                                                           chat_template):
    """By default a text prompt reaches the model as one user message (what the rewards get is what TRL
    generated from); `chat_template: false` keeps TRL's plain text."""
    seen = spy_reward(monkeypatch)["prompts"]
    home = model_store
    name = register(home, tmp_path, "grpo-text-chat", prompt_records(conversational=False))
    rl = {"reward_type": [{"type": "custom", "function": "tests.spy:reward"}], "chat_template": chat_template}
    job_id = f"grpo-chat-template-{chat_template}"
    code = run_job(spec(name, rl, max_steps=1, batch_size=8), job_id=job_id, home=home)
    assert code == 0, JobFolder(job_id, home).read_status().get("error")
    asked = {ask for ask in ASKS}
    if chat_template:
        assert all(p == [{"role": "user", "content": p[0]["content"]}] and p[0]["content"] in asked for p in seen)
        assert "8 text prompts asked as a user message" in JobFolder(job_id, home).log_path.read_text()
    else:
        assert all(isinstance(p, str) and p in asked for p in seen)
    assert len(seen) == 8


def test_stop_request_checkpoints_and_cancels(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-stop", prompt_records())
    job = JobFolder("grpo-stop", home)
    when_logged(job, job.request_stop)
    code = run_job(spec(name, max_steps=40, batch_size=8), job_id="grpo-stop", home=home)
    status = job.read_status()
    assert code == 4, status
    assert status["status"] == "cancelled" and not job.stop_path.exists()
    (checkpoint,) = list_checkpoints(job)
    assert 1 <= checkpoint.step < 40 and checkpoint.training_algorithm == "grpo" and "reward" in checkpoint.metrics
    assert verify_checkpoint(job.checkpoints_dir / checkpoint.uuid) == []
    assert "stop requested at step" in job.log_path.read_text() and not job.model_dir.exists()


def test_sigterm_then_rerun_resumes_from_the_checkpoint_and_completes(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-resume", prompt_records())
    data = spec(name, max_steps=12, batch_size=8, gradient_accumulation_steps=2)  # a generation every 2 micro-steps

    preempted = Preempted(home, tmp_path, data, "grpo-preempted", total_steps=12)  # SIGTERM → 75, one checkpoint
    job, interrupted = preempted.job, preempted.checkpoint
    preempted.rerun()
    assert f"resuming training at step {interrupted.step}" in job.log_path.read_text()
    status = job.read_status()
    assert status["status"] == "complete" and status["attempts"] == 2
    assert status["metrics"]["steps"] == 12
    steps = sorted({r["step"] for r in rows(job) if "reward" in r})
    assert steps == list(range(1, 13))  # the rerun logged every step after the checkpoint, none missing
    assert list_checkpoints(job)[-1].step == 12

    # against the same job run without interruption: identical up to the checkpoint, and after it too when the
    # checkpoint fell between two generation rounds (mid-round, TRL's buffered completions are regenerated)
    assert run_job(data, job_id="grpo-uninterrupted", home=home) == 0
    reference = JobFolder("grpo-uninterrupted", home)

    def by_step(j):
        return {r["step"]: (r["loss"], r["reward"], r["completions/mean_length"]) for r in rows(j) if "reward" in r}

    got, want = by_step(job), by_step(reference)
    upto = interrupted.step if interrupted.step % 2 else 12
    assert {s: got[s] for s in range(1, upto + 1)} == {s: want[s] for s in range(1, upto + 1)}


# -- issue 18: the time split, batched KV-cache generation, vLLM and Liger through the config ------------------

def test_time_split_and_mfu_per_logged_step_and_in_the_final_metrics(model_store, tmp_path, monkeypatch):
    import felix_train.perf.peak
    from felix_train.trainers import grpo_timing

    calls = []
    original = grpo_timing.TimedGRPOTrainer._generate_single_turn

    def spy(self, prompt_ids, *args, **kwargs):
        calls.append((len(prompt_ids), self.generation_config.use_cache))
        return original(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(grpo_timing.TimedGRPOTrainer, "_generate_single_turn", spy)
    monkeypatch.setattr(felix_train.perf.peak, "device_peak_flops", lambda *a, **k: 5e10)
    home = model_store
    name = register(home, tmp_path, "grpo-split", prompt_records())
    code = run_job(spec(name, max_steps=3, batch_size=16), job_id="grpo-split", home=home)
    job = JobFolder("grpo-split", home)
    status = job.read_status()
    assert code == 0, status.get("error")
    # every completion of a step in one generate call (2 prompts x 8 completions), with the KV cache
    assert calls == [(16, True)] * 3

    logged = [r for r in rows(job) if "reward" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for row in logged:
        for key in ("generation_s", "reward_s", "training_s", "generation_tokens_per_s", "tokens_per_s", "mfu"):
            assert row[key] > 0, (key, row)
    metrics = status["metrics"]
    for key in ("generation_s", "reward_s", "training_s", "generated_tokens", "generation_tokens_per_s",
                "train_tokens_per_s", "train_mfu", "flops_per_token"):
        assert metrics[key] > 0, key
    assert metrics["generation_s"] == pytest.approx(sum(r["generation_s"] for r in logged), rel=1e-3)
    assert metrics["generated_tokens"] <= 3 * 16 * 12  # max_completion_length 12
    assert status["progress"]["mfu"] > 0
    assert "generation with transformers (batched, KV cache)" in job.log_path.read_text()


def test_most_groups_without_gradient_for_five_logs_is_a_warning():
    from types import SimpleNamespace

    from felix_train.trainers.grpo_timing import ZeroStdWatch

    lines, events = [], []

    def warn(code, msg, *, step=None, **data):  # Reporter.warn: a WARN line in train.log and a `warning` event
        lines.append(("WARN", msg))
        events.append((code, step))

    ctx = SimpleNamespace(reporter=SimpleNamespace(warn=warn))
    watch = ZeroStdWatch(ctx)
    state = SimpleNamespace(global_step=0)
    for step, frac in enumerate([0.9, 0.9, 0.9, 0.9, 0.5, 0.9, 0.85, 1.0, 0.9, 0.95, 0.9, 1.0], start=1):
        state.global_step = step
        watch.on_log(None, state, None, logs={"frac_reward_zero_std": frac, "loss": 0.0})
        watch.on_log(None, state, None, logs={"train_runtime": 1.0})  # logs without the key change nothing
    assert [level for level, _ in lines] == ["WARN"]  # once per streak: steps 6..10
    assert "step 10" in lines[0][1] and "num_generations" in lines[0][1]
    assert events == [("grpo_zero_std", 10)]


def test_vllm_colocate_and_liger_reach_the_grpo_config_on_a_gpu(model_store, tmp_path, monkeypatch):
    import dataclasses

    from trl import GRPOConfig

    from felix_train.spec import GenerationBackend
    from felix_train.trainers import grpo
    from test_sft import _pretend_cuda, make_ctx

    home = model_store
    name = register(home, tmp_path, "grpo-gpu-args", prompt_records())
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda mod, *a: object() if mod == "vllm" else real_find_spec(mod, *a))
    ctx = _pretend_cuda(monkeypatch, make_ctx(home, "grpo-gpu-args", spec(name, generation="vllm")), liger=True)
    rl = ctx.spec.rl()
    assert grpo.check_params(rl, "cuda", GenerationBackend.VLLM) == []
    kwargs = grpo.config_kwargs(ctx, has_eval=False, reward_weights=[1.0])
    assert kwargs["use_vllm"] is True and kwargs["vllm_mode"] == "colocate" and "generation_kwargs" not in kwargs
    assert kwargs["use_liger_kernel"] is True and kwargs["bf16"] is True and kwargs["tf32"] is True
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(kwargs) <= fields, set(kwargs) - fields
    # transformers generation by default: no vLLM fields; on CPU the config is built for real
    cpu = make_ctx(home, "grpo-cpu-args", spec(name))
    kwargs = grpo.config_kwargs(cpu, has_eval=False, reward_weights=[1.0])
    assert kwargs["use_vllm"] is False and "vllm_mode" not in kwargs and "use_liger_kernel" not in kwargs
    assert GRPOConfig(**kwargs).generation_kwargs == {"use_cache": True}
    # on a GPU without liger-kernel installed: not asked for, and the log says how to get it
    monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: False)
    assert "use_liger_kernel" not in grpo.config_kwargs(ctx, has_eval=False, reward_weights=[1.0])
    assert "Liger kernels not used: liger-kernel is not installed" in ctx.job.log_path.read_text()

    # vLLM asked for where it cannot run: refused, naming the field and the fix
    (error,) = grpo.check_params(rl, "cpu", GenerationBackend.VLLM)
    assert error.loc == ("engine", "generation") and "needs a GPU" in error.msg
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == "vllm" else real_find_spec(mod, *a))
    (error,) = grpo.check_params(rl, "cuda", GenerationBackend.VLLM)
    assert "pip install vllm" in error.msg and "engine.generation: transformers" in error.msg


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_engine_generation_vllm_without_vllm_is_refused(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "grpo-engine-vllm", prompt_records())
    assert run_job(spec(name, generation="vllm"), job_id="grpo-engine-vllm", home=home) == 2
    (error,) = JobFolder("grpo-engine-vllm", home).read_status()["error"]["errors"]
    assert error["loc"] == ["engine", "generation"] and "pip install vllm" in error["msg"]
