"""SFT, DPO and GRPO quality (issue 19 item 1): the base model and the trained one, scored on data the job never saw.

Each run registers its train file, runs a felix job in its own process with a spec of only `base_model`,
`datasets`, `training_algorithm` and the required `rl_config` keys (under `--quick`, also a small step and
length budget), then scores the base (the catalog id) and the job on the held-out file with
`felix_train.evaluate.evaluate` (what `felix-train eval --json` runs), each in its own process:

- `sft`: dolly chats; held-out loss and perplexity;
- `dpo`: hh-rlhf pairs; held-out `reward_accuracy` (TRL's `rewards/accuracies`; the base is its own reference,
  so its figure is 0 by definition), mean `reward_margin`, `logp_accuracy`;
- `grpo`: arithmetic word problems and GSM8K (chat prompts, answer-format instruction), `numeric_match` reward;
  held-out `numeric_accuracy`. Before and after are generated alike: greedy, with the job's own
  `max_completion_length` as `max_new_tokens`.

`BUDGETS` holds the record counts (train, held-out) per run, default and `--quick`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.children import say
from bench.quality import rl_data
from bench.quality.harness import Context, eval_call, job_error, merge_spec, register, run_job, skip_reason

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

BUDGETS: dict[str, dict[str, tuple[int, int]]] = {
    # run: {"default": (train records, held-out records), "quick": (...)}
    "sft": {"default": (300, 100), "quick": (16, 8)},
    "dpo": {"default": (300, 100), "quick": (8, 8)},
    "grpo-arithmetic": {"default": (32, 100), "quick": (2, 4)},
    "grpo-gsm8k": {"default": (16, 50), "quick": (2, 4)},
}

QUICK_SPEC: dict[str, dict] = {
    # what --quick adds to a spec: a few short steps
    "sft": {"engine": {"max_steps": 2, "eval": {"fraction": 0}, "max_length": 256, "length_policy": "truncate"}},
    "dpo": {"engine": {"max_steps": 1, "eval": {"fraction": 0}, "batch_size": 4, "length_policy": "truncate"},
            "rl_config": {"max_length": 256}},
    "grpo": {"engine": {"max_steps": 1, "eval": {"fraction": 0}, "batch_size": 2},
             "rl_config": {"num_generations": 2, "max_completion_length": 24}},
}

FIGURES = {
    "sft": ("loss", "perplexity", "token_accuracy"),
    "dpo": ("reward_accuracy", "reward_margin", "logp_accuracy", "ref_logp_accuracy", "length_normalized_accuracy"),
    "grpo": ("numeric_accuracy", "reward_mean", "no_number", "mean_completion_chars"),
}


def _figures(report: dict, algorithm: str) -> dict:
    if "error" in report:
        return {"error": report["error"], "eval_s": report.get("wall_s")}
    return {**{k: report.get(k) for k in FIGURES[algorithm]}, "eval_s": report.get("wall_s")}


def _resolved_rl(ctx: Context, job_id: str) -> dict:
    try:
        spec = json.loads((ctx.home / "jobs" / job_id / "spec.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return spec.get("rl_config") or {}


def one_run(ctx: Context, name: str, algorithm: str, files: dict[str, Path], rl_config: dict | None,
            meta: dict) -> dict:
    """Register, train, score the base and the job on the held-out file."""
    register(ctx, f"q-{name}", files["train"])
    spec: dict = {"base_model": MODEL, "datasets": [{"name": f"q-{name}"}]}
    if algorithm != "sft":
        spec.update(training_algorithm=algorithm, rl_config=rl_config or {})
    if ctx.quick:
        spec = merge_spec(spec, QUICK_SPEC[algorithm])
    job_id = f"q-{name}"
    run = run_job(ctx, job_id, spec)
    out = {**meta, "spec": spec, "status": run["status"], "wall_s": run["wall_s"], "cpu_s": run["cpu_s"],
           "train_metrics": {k: v for k, v in run["metrics"].items() if isinstance(v, (int, float))}}
    if run["status"] != "complete":
        out["error"] = job_error(run)
        return out
    options: dict = {}
    if algorithm == "grpo":
        options["max_new_tokens"] = _resolved_rl(ctx, job_id).get("max_completion_length") or \
            spec.get("rl_config", {}).get("max_completion_length")
        out["max_new_tokens"] = options["max_new_tokens"]
    out["before"] = _figures(eval_call(ctx, f"{job_id}-before", MODEL, files["test"], **options), algorithm)
    out["after"] = _figures(eval_call(ctx, f"{job_id}-after", job_id, files["test"], **options), algorithm)
    return out


def run_rl(ctx: Context, only: set[str]) -> dict:
    """Every requested run (`sft`, `dpo`, `grpo`: arithmetic and GSM8K); `{run: figures}`."""
    budget = "quick" if ctx.quick else "default"
    folder = ctx.folder("rl-data")
    out: dict = {"model": MODEL, "budget": budget}
    plan = [("sft", "sft", "dolly/dolly_open_qa_1000.jsonl"), ("dpo", "dpo", "hh_rlhf"),
            ("grpo-arithmetic", "grpo", None), ("grpo-gsm8k", "grpo", "gsm8k")]
    for name, algorithm, needs in plan:
        if algorithm not in only:
            continue
        reason = skip_reason(ctx, needs) if needs else None
        if reason:
            say(f"{name} skipped: {reason}")
            out[name] = {"skipped": reason}
            continue
        train_n, test_n = BUDGETS[name][budget]
        meta: dict = {"train_records": train_n, "held_out_records": test_n}
        if name == "sft":
            files = rl_data.sft_files(ctx.data_dir, folder, train_n, test_n)
        elif name == "dpo":
            files = rl_data.dpo_files(ctx.data_dir, folder, train_n, test_n)
        elif name == "grpo-gsm8k":
            files = rl_data.gsm8k_files(ctx.data_dir, folder, train_n, test_n)
        else:
            files, meta["generator"] = rl_data.arithmetic_files(folder, train_n, test_n)
        rl_config = {"reward_type": "numeric_match"} if algorithm == "grpo" else None
        out[name] = one_run(ctx, name, algorithm, files, rl_config, meta)  # a failure keeps the runs done
    return out
