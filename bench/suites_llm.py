"""The SmolLM2 benchmarks of `make bench`: SFT and DPO (felix against plain TRL scripts) and GRPO's time split.

- `bench_sft_llm`: LoRA SFT of `HuggingFaceTB/SmolLM2-135M-Instruct` with felix's defaults for it (batch 8,
  max_length 1024, LoRA r 16 / alpha 32 / dropout 0.05 / all-linear, lr 2e-4, warmup 0.1, weight decay 0.01,
  seed 42, loss on the replies) against `bench/baselines/trl_sft.py` with the same values. Both train one epoch
  on the same first `batch × (warmup + steps)` dolly records (so both sides see exactly the same records, in
  their own orders); the first `warmup` optimizer steps are left out of the rates. felix on CPU pads
  length-grouped batches (no packing: no attention across examples); the baseline pads random batches.
- `bench_dpo`: LoRA DPO on the hh-rlhf pairs (`prompt`/`chosen`/`rejected` text, read as felix's
  preference format reads them), felix against `bench/baselines/trl_dpo.py`, bounded the same way
  (`--quick`: batches of 4 on both sides).
- `bench_grpo`: felix GRPO alone (no plain-TRL line): steps/s, and per step the `generate()` seconds and
  generated tokens/s measured from the outside by the probe, the rest of the step (rewards + training), and
  the split keys felix's metrics carry when present (`n/a` otherwise). 4 completions of ≤ 64 tokens per
  prompt, batch 8 (`--quick`: 2 of ≤ 32, batch 4), gsm8k prompts, `numeric_match`.

MFU is computed here, from the measured rate, on both sides alike: FLOPs per real token from
`felix_train.perf.flops` (LoRA: 4N frozen base + 6·N_lora + attention at T = Σn²/Σn of the timed rows, the
probe's per-row counts; DPO adds the reference forward), over the CPU's fp32 matmul peak from
`felix_train.perf.peak` (measured in a child with the children's threads). The baseline's bf16 variant (TRL's
default precision) runs as a side of its own when the bf16 matmul peak is at least the fp32 one; otherwise the
measured peaks say why it is not run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.children import ROOT, median, ratios, run_sides, say, summarise, write_yaml

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA = ROOT.parent / "shared" / "data"
DOLLY = DATA / "dolly" / "dolly_open_qa_1000.jsonl"
HH_RLHF = DATA / "hh_rlhf" / "hh_rlhf_harmless_base_train_sample.jsonl"
GSM8K = DATA / "gsm8k" / "gsm8k_train_sample.jsonl"
TRL_SFT = ROOT / "bench" / "baselines" / "trl_sft.py"
TRL_DPO = ROOT / "bench" / "baselines" / "trl_dpo.py"

# (warm-up steps left out, timed steps), full and --quick: one side stays within ~90 s at ~100 real tokens/s
SFT_STEPS = {"full": (2, 10), "quick": (2, 4)}
DPO_STEPS = {"full": (1, 2), "quick": (1, 2)}
GRPO_STEPS = {"full": (1, 3), "quick": (1, 2)}
QUICK_BATCH = 4  # --quick: DPO and GRPO batches of 4 on both sides (a DPO pair is ~300 tokens, twice over)
GRPO = {"num_generations": 4, "max_completion_length": 64, "reward_type": "numeric_match"}
GRPO_QUICK = {"num_generations": 2, "max_completion_length": 32, "reward_type": "numeric_match"}
GRPO_SPLIT = {  # figure -> substrings a metrics key must hold (after a `time/`-style prefix), first match wins
    "generation_s": ("generation_s", "generate_s", "gen_s", "generation_seconds"),
    "reward_s": ("reward_s", "rewards_s", "reward_seconds"),
    "train_s": ("train_s", "training_s", "optimizer_s", "train_seconds"),
    "generated_tokens_per_s": ("generated_tokens_per_s", "generation_tokens_per_s", "gen_tokens_per_s",
                               "completion_tokens_per_s"),
}
RATE_KEYS = ["tokens_per_s", "tokens_per_cpu_s", "achieved_gflops", "mfu", "flops_per_token", "seq_len",
             "step_s", "first_step_s", "peak_rss_mb", "cpu_s", "wall_s", "tokens"]


def felix_defaults(model_id: str = SMOLLM2, algorithm: str = "sft") -> dict:
    """felix's defaults for `model_id` and `algorithm` (catalog and spec), the values the baselines are given."""
    from felix_train.catalog import get_entry
    from felix_train.spec import Algorithm, EngineSpec, TrainingType

    entry, engine = get_entry(model_id), EngineSpec()
    return {"lr": entry.learning_rate(Algorithm(algorithm), TrainingType.LORA), "batch_size": entry.default_batch_size or 8,
            "max_length": entry.default_max_length, "lora_r": engine.lora.r,
            "lora_alpha": engine.lora.alpha or 2 * engine.lora.r, "lora_dropout": engine.lora.dropout,
            "target_modules": entry.lora_target_modules or "all-linear", "warmup": engine.warmup_ratio,
            "weight_decay": engine.weight_decay, "seed": engine.seed}


def baseline_args(script: Path, model_path: str, data: Path, hp: dict) -> list[str]:
    return [str(script), "--model", model_path, "--data", str(data), "--lr", str(hp["lr"]),
            "--batch-size", str(hp["batch_size"]), "--max-length", str(hp["max_length"]),
            "--lora-r", str(hp["lora_r"]), "--lora-alpha", str(hp["lora_alpha"]),
            "--lora-dropout", str(hp["lora_dropout"]), "--target-modules", str(hp["target_modules"]),
            "--warmup", str(hp["warmup"]), "--weight-decay", str(hp["weight_decay"]), "--seed", str(hp["seed"])]


def first_records(src: Path, n: int, dest: Path) -> int:
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def register(home: Path, name: str, path: Path) -> str | None:
    """Register `path` as dataset `name` under `home`; None when ready, else why not."""
    from felix_train.data.registry import DatasetRegistry

    manifest = DatasetRegistry(home).add(name, path, overwrite=True)
    return None if str(getattr(manifest.state, "value", manifest.state)) == "ready" else str(manifest.error)


def model_config(model_path: str) -> dict | None:
    path = Path(model_path) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# -- MFU --------------------------------------------------------------------------------------------------------

def add_mfu(run: dict, config: dict | None, peak: float | None, algorithm: str, hp: dict) -> None:
    """FLOPs per real token (at the run's measured T) and, over the rate, achieved TFLOP/s and MFU, into `run`."""
    if not config or not run.get("tokens_per_s"):
        return
    from felix_train.perf.flops import training_flops
    from felix_train.perf.mfu import throughput_metrics

    f = training_flops(algorithm, "lora", config, int(round(run.get("seq_len") or 0)), r=hp["lora_r"],
                       target_modules=hp["target_modules"])
    run["flops_per_token"] = f.total
    run["flops_formula"] = f.formula
    figures = throughput_metrics(run["tokens_per_s"], 1.0, f.total, peak)
    run["achieved_gflops"] = round(run["tokens_per_s"] * f.total / 1e9, 2)  # medians keep 3 decimals: not TFLOP/s
    run["mfu"] = figures["mfu"]


def pick_baseline(result: dict, runs: dict, keys: list[str]) -> None:
    """`result["baseline"]` = the faster (median tokens/s) of the plain variants run; which one in `baseline_variant`."""
    variants = {side: summarise(runs[side], keys) for side in runs if side != "felix"}
    best = max(variants, key=lambda s: variants[s].get("tokens_per_s") or 0)
    result["baseline"], result["baseline_variant"] = variants[best], best
    if len(variants) > 1:
        result["baseline_variants"] = variants


def bf16_variant(peaks: dict, mode: str) -> tuple[dict[str, list[str]], str]:
    """The baseline's bf16 side (TRL's default precision), if it should run, and why (not)."""
    fp32, bf16 = peaks.get("fp32"), peaks.get("bf16")
    if fp32 and bf16:
        speed = f"{fp32 / bf16:.1f}x slower" if bf16 < fp32 else f"{bf16 / fp32:.1f}x faster"
        measured = f"bf16 matmul {bf16 / 1e9:.1f} GFLOP/s vs fp32 {fp32 / 1e9:.1f} GFLOP/s ({speed} in bf16)"
    else:
        measured = "no peak measured"
    if mode == "off" or (mode == "auto" and not (fp32 and bf16 and bf16 >= fp32)):
        return {}, f"baseline in fp32 only: {measured}" + (" (--baseline-bf16 off)" if mode == "off" else "")
    return {"baseline_bf16": ["--bf16"]}, f"baseline also run with TRL's bf16 ({measured}); the faster one counts"


def compare(name: str, spec: Path, base: list[str], work: Path, env: dict, felix_env: dict, repeats: int, *,
            pad_id: int, warmup: int, variants: dict, config: dict | None, peak: float | None, algorithm: str,
            hp: dict) -> dict:
    runs = run_sides(name, spec, base, work, env, felix_env, repeats, rate=("tokens_per_s", "tok/s"),
                     pad_id=pad_id, warmup=warmup, variants=variants)
    for side_runs in runs.values():
        for run in side_runs:
            add_mfu(run, config, peak, algorithm, hp)
    result: dict = {"runs": runs, "felix": summarise(runs["felix"], RATE_KEYS)}
    pick_baseline(result, runs, RATE_KEYS)
    result["ratio"] = ratios(result["felix"], result["baseline"], ["tokens_per_s", "tokens_per_cpu_s", "mfu"],
                             ["first_step_s", "peak_rss_mb", "cpu_s"])
    return result


# -- SFT ----------------------------------------------------------------------------------------------------------

def bench_sft_llm(home: Path, work: Path, env: dict, args, model: dict, peaks: dict, felix_env: dict) -> dict:
    if not DOLLY.exists():
        return {"skipped": f"the chat data {DOLLY} is not there (it lives beside the repo as ../shared/data)"}
    hp = felix_defaults()
    warmup, steps = SFT_STEPS["quick" if args.quick else "full"] if args.llm_steps is None else (2, args.llm_steps)
    data = work / "smollm2-dolly.jsonl"
    n = first_records(DOLLY, hp["batch_size"] * (warmup + steps), data)
    if (error := register(home, "bench-smollm2-dolly", data)) is not None:
        return {"skipped": f"the chat data did not validate: {error}"}
    # felix's defaults: only what the comparison needs (no eval split: the baseline has none)
    spec = write_yaml(work / "sft-smollm2.yaml", {
        "base_model": SMOLLM2, "datasets": [{"name": "bench-smollm2-dolly"}],
        "engine": {"eval": {"fraction": 0}, "length_policy": "truncate"}})
    base = baseline_args(TRL_SFT, model["path"], data, hp)
    if model.get("training_chat_template"):
        template = work / "smollm2-training-template.jinja"
        template.write_text(model["training_chat_template"], encoding="utf-8")
        base += ["--chat-template", str(template)]
    variants, precision_note = bf16_variant(peaks, args.baseline_bf16)
    say(f"sft-smollm2: {n} dolly records, {warmup} warm-up + {steps} timed steps; {precision_note}")
    result = compare("sft-smollm2", spec, base, work, env, felix_env, args.repeats, pad_id=model["pad_id"],
                     warmup=warmup, variants=variants, config=model_config(model["path"]), peak=peaks.get("fp32"),
                     algorithm="sft", hp=hp)
    return {"records": n, "warmup_steps": warmup, "timed_steps": steps, "hyperparameters": hp,
            "precision": precision_note, "peaks": peaks, **result}


# -- DPO ----------------------------------------------------------------------------------------------------------

def bench_dpo(home: Path, work: Path, env: dict, args, model: dict, peaks: dict, felix_env: dict) -> dict:
    if not HH_RLHF.exists():
        return {"skipped": f"the preference pairs {HH_RLHF} are not there"}
    hp = {**felix_defaults(algorithm="dpo"), **({"batch_size": QUICK_BATCH} if args.quick else {})}
    warmup, steps = DPO_STEPS["quick" if args.quick else "full"]
    data = work / "smollm2-hh-rlhf.jsonl"
    n = first_records(HH_RLHF, hp["batch_size"] * (warmup + steps), data)
    if (error := register(home, "bench-smollm2-hh-rlhf", data)) is not None:
        return {"skipped": f"the preference pairs did not validate: {error}"}
    spec = write_yaml(work / "dpo-smollm2.yaml", {
        "base_model": SMOLLM2, "datasets": [{"name": "bench-smollm2-hh-rlhf"}], "training_algorithm": "dpo",
        "rl_config": {"beta": 0.1}, "engine": {"eval": {"fraction": 0}, "length_policy": "truncate",
                                               "batch_size": hp["batch_size"]}})
    base = baseline_args(TRL_DPO, model["path"], data, hp) + ["--beta", "0.1"]
    variants, precision_note = bf16_variant(peaks, args.baseline_bf16)
    say(f"dpo-smollm2: {n} pairs, {warmup} warm-up + {steps} timed steps; {precision_note}")
    result = compare("dpo-smollm2", spec, base, work, env, felix_env, args.repeats, pad_id=model["pad_id"],
                     warmup=warmup, variants=variants, config=model_config(model["path"]), peak=peaks.get("fp32"),
                     algorithm="dpo", hp=hp)
    return {"pairs": n, "warmup_steps": warmup, "timed_steps": steps, "hyperparameters": {**hp, "beta": 0.1},
            "precision": precision_note, **result}


# -- GRPO ---------------------------------------------------------------------------------------------------------

def split_from_metrics(job_dir: Path, timed_from_step: int) -> dict:
    """felix's own GRPO time split: the mean over logged steps after the warm-up of each `GRPO_SPLIT` figure found
    in metrics.jsonl (any key holding one of its names, e.g. `time/generation_s`), else in status.json's
    metrics; None for a figure felix does not log."""
    rows: list[dict] = []
    path = job_dir / "metrics.jsonl"
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict) and (row.get("step") or 0) > timed_from_step:
                rows.append(row)
    status = job_dir / "status.json"
    if status.exists():
        try:
            state = json.loads(status.read_text(encoding="utf-8"))
        except ValueError:
            state = {}
        for key in ("metrics", "final_metrics", "progress"):
            if isinstance(state.get(key), dict):
                rows.append(state[key])
                break
    out: dict = {}
    for figure, names in GRPO_SPLIT.items():
        values = []
        for row in rows:
            key = next((k for k in row for name in names
                        if k.lower().rsplit("/", 1)[-1] == name and isinstance(row[k], (int, float))), None)
            if key is not None:
                values.append(float(row[key]))
        out[figure] = round(sum(values) / len(values), 3) if values else None
    lengths = [row["completions/mean_length"] for row in rows if isinstance(row.get("completions/mean_length"),
                                                                             (int, float))]
    out["completion_mean_length"] = round(sum(lengths) / len(lengths), 1) if lengths else None
    return out


def bench_grpo(home: Path, work: Path, env: dict, args, model: dict, peaks: dict, felix_env: dict) -> dict:
    from bench.children import probed, run_child, training_figures

    if not GSM8K.exists():
        return {"skipped": f"the prompts {GSM8K} are not there"}
    hp = {**felix_defaults(algorithm="grpo"), **({"batch_size": QUICK_BATCH} if args.quick else {})}
    rl = GRPO_QUICK if args.quick else GRPO
    warmup, steps = GRPO_STEPS["quick" if args.quick else "full"]
    prompts_per_step = hp["batch_size"] // rl["num_generations"]
    data = work / "smollm2-gsm8k.jsonl"
    n = first_records(GSM8K, prompts_per_step * (warmup + steps), data)
    if (error := register(home, "bench-smollm2-gsm8k", data)) is not None:
        return {"skipped": f"the prompts did not validate: {error}"}
    spec = write_yaml(work / "grpo-smollm2.yaml", {
        "base_model": SMOLLM2, "datasets": [{"name": "bench-smollm2-gsm8k"}], "training_algorithm": "grpo",
        "rl_config": dict(rl), "engine": {"eval": {"fraction": 0}, "logging_steps": 1,
                                          "batch_size": hp["batch_size"]}})
    config, peak = model_config(model["path"]), peaks.get("fp32")
    runs = []
    for rep in range(max(1, args.repeats - 1)):  # felix alone: no alternation to keep fair, fewer repeats
        tag = f"grpo-smollm2-felix-{rep}"
        job_id = f"bench-{tag}"
        out = work / f"{tag}.probe.json"
        run = run_child(probed(["-m", "felix_train", str(spec), "--job-id", job_id], out, model["pad_id"],
                               time_generate=True), {**env, **felix_env}, work / f"{tag}.log")
        run.update(training_figures(out, run, warmup=warmup), repeat=rep, job_id=job_id)
        if run.get("step_s"):
            run["steps_per_s"] = round(1 / run["step_s"], 4)
            gen = run.get("generate_s_per_step")
            run["rest_s_per_step"] = round(run["step_s"] - gen, 3) if gen is not None else None
        run["felix_split"] = split_from_metrics(home / "jobs" / job_id, warmup)
        add_grpo_mfu(run, config, peak, hp)
        runs.append(run)
        say(f"grpo-smollm2 felix #{rep}: exit {run['exit_code']}, {run.get('step_s')} s/step, generate "
            f"{run.get('generate_s_per_step')} s/step at {run.get('generated_tokens_per_s')} tok/s, "
            f"{run['wall_s']} s wall, load {run['load_before']}->{run['load_after']}")
    keys = ["steps_per_s", "step_s", "generate_s_per_step", "generated_tokens_per_s", "rest_s_per_step",
            "tokens_per_s", "achieved_gflops", "mfu", "first_step_s", "peak_rss_mb", "wall_s"]
    felix = summarise(runs, keys)
    ok = [r for r in runs if r.get("exit_code") == 0]
    felix["felix_split"] = {k: median([r["felix_split"].get(k) for r in ok]) for k in (*GRPO_SPLIT, "completion_mean_length")}
    return {"prompts": n, "warmup_steps": warmup, "timed_steps": steps, "rl_config": rl,
            "batch_size": hp["batch_size"], "runs": runs, "felix": felix}


def add_grpo_mfu(run: dict, config: dict | None, peak: float | None, hp: dict) -> None:
    """GRPO's model FLOPs per second of step: the training pass (LoRA formula, per real token) plus generation
    (KV-cache formula, per generated token, at the mean training row length as context), over the fp32 peak."""
    if not config or not run.get("train_s") or not run.get("tokens"):
        return
    from felix_train.perf.flops import generation_flops, training_flops

    seq = int(round(run.get("seq_len") or 0))
    total = run["tokens"] * training_flops("grpo", "lora", config, seq, r=hp["lora_r"],
                                           target_modules=hp["target_modules"]).total
    total += (run.get("generated_tokens") or 0) * generation_flops(config, seq).total
    flops_per_s = total / run["train_s"]
    run["achieved_gflops"] = round(flops_per_s / 1e9, 2)
    run["mfu"] = round(flops_per_s / peak, 4) if peak else None
