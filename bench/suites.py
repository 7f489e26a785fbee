"""The benchmarks `make bench` runs, one function each: SFT LoRA on the tiny model and GLiNER2 (felix against the
plain-library baselines in `bench/baselines/`), `felix-train validate`, and the predict latency (`bench/predict.py`).
The SmolLM2 ones (SFT, DPO, GRPO) are in `bench/suites_llm.py`.

What each one measures, and how, is in `bench/run.py`'s docstring. Every function returns the JSON-ready dict that
goes under its key in the results file (`sft`, `gliner2`, `validate`, `predict`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.children import ROOT, median, ratios, run_child, run_sides, summarise, write_yaml
from bench.suites_llm import add_mfu, model_config

TRL_BASELINE = ROOT / "bench" / "baselines" / "trl_sft.py"
GLINER_BASELINE = ROOT / "bench" / "baselines" / "gliner2_direct.py"
PREDICT = ROOT / "bench" / "predict.py"
DOLLY = ROOT.parent / "shared" / "data" / "dolly" / "dolly_open_qa_1000.jsonl"
NER_DATASET = "felix-ner-quickstart"
TINY_LLM = "felix/tiny-llm"
GLINER_MODELS = ("felix/tiny-gliner2", "felix/gliner2-minilm-l6")

SFT = {"lr": 2e-4, "batch_size": 8, "max_length": 512, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
       "warmup": 0.1, "weight_decay": 0.01, "seed": 42}
GLINER = {"lr": 2e-3, "encoder_lr": 2e-3, "batch_size": 8, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
          "warmup": 0.1, "weight_decay": 0.01, "seed": 42}


# -- SFT -----------------------------------------------------------------------------------------------------------

def bench_sft(home: Path, work: Path, env: dict, args, model_path: str, pad_id: int, felix_env: dict,
              peak: float | None = None) -> dict:
    if not DOLLY.exists():
        return {"skipped": f"the chat data {DOLLY} is not there (it lives beside the repo as ../shared/data)"}
    from felix_train.data.registry import DatasetRegistry

    lines = [line for line in DOLLY.read_text(encoding="utf-8").splitlines() if line.strip()][: args.sft_records]
    data = work / f"dolly-{len(lines)}.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    name = f"bench-dolly-{len(lines)}"
    manifest = DatasetRegistry(home).add(name, data, overwrite=True)
    if str(getattr(manifest.state, "value", manifest.state)) != "ready":
        return {"skipped": f"the chat data did not validate: {manifest.error}"}

    spec = write_yaml(work / "sft.yaml", {
        "base_model": TINY_LLM, "datasets": [{"name": name}], "num_epochs": 1, "learning_rate": SFT["lr"],
        "engine": {"seed": SFT["seed"], "batch_size": SFT["batch_size"], "max_length": SFT["max_length"],
                   "length_policy": "truncate", "eval": {"fraction": 0}, "warmup_ratio": SFT["warmup"],
                   "weight_decay": SFT["weight_decay"],
                   "lora": {"r": SFT["lora_r"], "alpha": SFT["lora_alpha"], "dropout": SFT["lora_dropout"],
                            "target_modules": "all-linear"}}})
    baseline_args = [str(TRL_BASELINE), "--model", model_path, "--data", str(data), "--lr", str(SFT["lr"]),
                     "--batch-size", str(SFT["batch_size"]), "--max-length", str(SFT["max_length"]),
                     "--lora-r", str(SFT["lora_r"]), "--lora-alpha", str(SFT["lora_alpha"]),
                     "--lora-dropout", str(SFT["lora_dropout"]), "--warmup", str(SFT["warmup"]),
                     "--weight-decay", str(SFT["weight_decay"]), "--seed", str(SFT["seed"])]
    runs = run_sides("sft", spec, baseline_args, work, env, felix_env, args.repeats, pad_id=pad_id,
                     rate=("tokens_per_s", "tok/s"))
    hp = {**SFT, "target_modules": "all-linear"}
    for side_runs in runs.values():
        for run in side_runs:
            add_mfu(run, model_config(model_path), peak, "sft", hp)
    keys = ["tokens_per_s", "tokens_per_cpu_s", "first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s", "wall_s",
            "train_s", "tokens_total", "seq_len", "flops_per_token", "achieved_gflops", "mfu"]
    result: dict = {"records": len(lines), "hyperparameters": SFT, "runs": runs}
    for side in runs:
        result[side] = summarise(runs[side], keys)
        warm = [r.get("first_step_s") for r in runs[side][1:] if r.get("exit_code") == 0] if args.repeats > 1 else []
        result[side]["first_step_cold_s"] = runs[side][0].get("first_step_s") if runs[side] else None
        result[side]["first_step_warm_s"] = median(warm)
    result["ratio"] = ratios(result["felix"], result["baseline"], ["tokens_per_s", "tokens_per_cpu_s", "mfu"],
                             ["first_step_s", "first_step_cpu_s", "first_step_cold_s", "first_step_warm_s",
                              "peak_rss_mb", "cpu_s"])
    return result


# -- GLiNER2 ------------------------------------------------------------------------------------------------------

def bench_gliner(home: Path, work: Path, env: dict, args, model_id: str, model_path: str, steps: int,
                 felix_env: dict) -> dict:
    from felix_train.data.registry import DatasetRegistry

    data = DatasetRegistry(home).data_path(NER_DATASET)
    short = model_id.split("/")[-1]
    spec = write_yaml(work / f"{short}.yaml", {
        "base_model": model_id, "datasets": [{"name": NER_DATASET}], "num_epochs": 1, "learning_rate": GLINER["lr"],
        "engine": {"seed": GLINER["seed"], "batch_size": GLINER["batch_size"], "max_steps": steps,
                   "encoder_learning_rate": GLINER["encoder_lr"],
                   "eval": {"fraction": 0}, "warmup_ratio": GLINER["warmup"], "weight_decay": GLINER["weight_decay"],
                   "lora": {"r": GLINER["lora_r"], "alpha": GLINER["lora_alpha"], "dropout": GLINER["lora_dropout"]}}})
    baseline_args = [str(GLINER_BASELINE), "--model", model_path, "--data", str(data), "--lr", str(GLINER["lr"]),
                     "--encoder-lr", str(GLINER["encoder_lr"]), "--batch-size", str(GLINER["batch_size"]),
                     "--max-steps", str(steps),
                     "--lora-r", str(GLINER["lora_r"]), "--lora-alpha", str(GLINER["lora_alpha"]),
                     "--lora-dropout", str(GLINER["lora_dropout"]), "--warmup", str(GLINER["warmup"]),
                     "--weight-decay", str(GLINER["weight_decay"]), "--seed", str(GLINER["seed"])]
    runs = run_sides(short, spec, baseline_args, work, env, felix_env, args.repeats, per_step=GLINER["batch_size"],
                     rate=("samples_per_s", "samples/s"))
    keys = ["samples_per_s", "samples_per_cpu_s", "first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s", "wall_s"]
    result: dict = {"steps": steps, "hyperparameters": GLINER, "runs": runs}
    for side in runs:
        result[side] = summarise(runs[side], keys)
    result["ratio"] = ratios(result["felix"], result["baseline"], ["samples_per_s", "samples_per_cpu_s"],
                             ["first_step_s", "first_step_cpu_s", "peak_rss_mb", "cpu_s"])
    return result


def bench_gliner2(home: Path, work: Path, env: dict, args, paths: dict[str, str | None], felix_env: dict):
    """`bench_gliner` for each of `--gliner-models`, yielding (model id, result) as each finishes; a model that did
    not materialise is skipped."""
    from felix_train.data.registry import DatasetRegistry

    with open(DatasetRegistry(home).data_path(NER_DATASET), encoding="utf-8") as fh:
        epoch_steps = -(-sum(1 for line in fh if line.strip()) // GLINER["batch_size"])
    for model_id in [m for m in args.gliner_models.split(",") if m]:
        if not paths.get(model_id):
            yield model_id, {"skipped": f"{model_id} is not available (see the log above)"}
            continue
        # one whole epoch (quick: a part): both sides then train on exactly the same records, in their
        # own orders; a few steps measured the sentence lengths of two shuffles more than the trainers
        steps = (20 if args.quick else epoch_steps) if "tiny" in model_id else (30 if args.quick else epoch_steps)
        yield model_id, bench_gliner(home, work, env, args, model_id, paths[model_id], steps, felix_env)


# -- validate and predict -----------------------------------------------------------------------------------------

def bench_validate(home: Path, work: Path, env: dict, n: int = 5) -> dict:
    spec = write_yaml(work / "validate.yaml", {
        "base_model": "felix/tiny-gliner2", "datasets": [{"name": NER_DATASET}], "engine": {"max_steps": 10}})
    runs = [run_child([sys.executable, "-m", "felix_train", "validate", str(spec)], env, work / f"validate-{i}.log")
            for i in range(n)]
    check = subprocess.run(
        [sys.executable, "-c", "import runpy, sys\nsys.argv = ['felix-train', 'validate', sys.argv[1]]\n"
         "try:\n    runpy.run_module('felix_train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH_LOADED', 'torch' in sys.modules, file=sys.stderr)", str(spec)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"runs": n, "exit_codes": sorted({r["exit_code"] for r in runs}),
            "wall_s": median([r["wall_s"] for r in runs]), "cpu_s": median([r["cpu_s"] for r in runs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "torch_loaded": "TORCH_LOADED True" in check.stderr}


def bench_predict(home: Path, work: Path, env: dict, quick: bool) -> dict:
    out = work / "predict.json"
    counts = ["--requests", "30", "--batches", "5", "--llm-requests", "3"] if quick else \
        ["--requests", "60", "--batches", "10", "--llm-requests", "5"]
    run = run_child([sys.executable, str(PREDICT), "--home", str(home / "predict"),
                     "--out", str(out), *counts], env, work / "predict.log", timeout_s=600)
    report = json.loads(out.read_text()) if out.exists() else {"error": f"no report (exit {run['exit_code']})"}
    return {"exit_code": run["exit_code"], "wall_s": run["wall_s"], "report": report}


