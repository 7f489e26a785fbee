"""Loss parity: felix SFT without packing trains exactly like the plain TRL script a user would write.

`bench/baselines/trl_sft.py` and felix (`engine.packing: false`) train `felix/tiny-llm` with LoRA on
the built-in `felix-chat-mini` chats for 20 steps at the same seed: the logged per-step losses must agree
within 1e-4 (HF logs them rounded to 4 decimals; in practice they are equal). Both run TRL's trainer on
the same device, so a difference is a real difference in felix's pipeline (tokenisation, masking, length
handling, sampler, LoRA initialisation, schedule), not noise.

The honest equivalent of a felix job in plain TRL is TRL's defaults plus: `assistant_only_loss=True`
(felix's `completion_only_loss: true`; the tiny model's template has `{% generation %}` markers), the
job's LoRA shape, learning rate, batch size, max_length, seed, and felix's `warmup_ratio` 0.1 and
`weight_decay` 0.01 (TRL's are 0), and, on CPU, `bf16=False`, `gradient_checkpointing=False` (TRL turns both
on). Felix tokenizes itself (`sft.tokenize_record`), applies its length policy, caches the result and
hands TRL the prepared rows (`skip_prepare_dataset`), and on CPU projects the LM head on labelled positions
only: none of it changes a loss. `packing: auto` (length-grouped batches) sees the same examples in
another order, so its losses differ step by step (not asserted here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from felix_train import run_job
from felix_train.catalog import get_entry
from felix_train.data.registry import BUILTIN_DIR
from felix_train.jobs import JobFolder
from felix_train.models import resolve_model

ROOT = Path(__file__).resolve().parents[2]
TINY = "felix/tiny-llm"
DATASET = "felix-chat-mini"
STEPS = 20
HYPER = {"lr": 5e-3, "batch_size": 8, "max_length": 256, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
         "warmup": 0.1, "weight_decay": 0.01, "seed": 11}


def _baseline():
    spec = importlib.util.spec_from_file_location("trl_sft_baseline", ROOT / "bench" / "baselines" / "trl_sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def felix_losses(home: Path, packing) -> dict[int, float]:
    spec = {"base_model": TINY, "datasets": [{"name": DATASET}], "learning_rate": HYPER["lr"], "num_epochs": 1,
            "engine": {"seed": HYPER["seed"], "batch_size": HYPER["batch_size"], "max_length": HYPER["max_length"],
                       "max_steps": STEPS, "logging_steps": 1, "packing": packing, "eval": {"fraction": 0},
                       "warmup_ratio": HYPER["warmup"], "weight_decay": HYPER["weight_decay"], "report_to": [],
                       "save_steps": 1000,
                       "lora": {"r": HYPER["lora_r"], "alpha": HYPER["lora_alpha"], "dropout": HYPER["lora_dropout"],
                                "target_modules": "all-linear"}}}
    job_id = f"parity-{str(packing).lower()}"
    code = run_job(spec, job_id=job_id, home=home, echo=False)
    job = JobFolder(job_id, home)
    assert code == 0, job.read_status().get("error")
    losses = {}
    for line in job.metrics_path.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            losses[row["step"]] = row["loss"]
    return losses


def trl_losses(home: Path, tmp_path: Path) -> dict[int, float]:
    out = tmp_path / "trl_losses.json"
    args = ["--model", str(resolve_model(get_entry(TINY), home)), "--data", str(BUILTIN_DIR / f"{DATASET}.jsonl"),
            "--output-dir", str(tmp_path / "trl"), "--lr", str(HYPER["lr"]), "--batch-size", str(HYPER["batch_size"]),
            "--max-length", str(HYPER["max_length"]), "--max-steps", str(STEPS), "--lora-r", str(HYPER["lora_r"]),
            "--lora-alpha", str(HYPER["lora_alpha"]), "--lora-dropout", str(HYPER["lora_dropout"]),
            "--warmup", str(HYPER["warmup"]), "--weight-decay", str(HYPER["weight_decay"]),
            "--seed", str(HYPER["seed"]), "--logging-steps", "1", "--losses-out", str(out), "--no-save"]
    assert _baseline().main(args) == 0
    return {int(step): loss for step, loss in json.loads(out.read_text()).items()}


def test_unpacked_sft_reproduces_the_plain_trl_losses(model_store, tmp_path):
    home = model_store
    ours = felix_losses(home, packing=False)
    theirs = trl_losses(home, tmp_path)
    assert sorted(ours) == sorted(theirs) == list(range(1, STEPS + 1))
    diffs = {step: abs(ours[step] - theirs[step]) for step in ours}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-4, (f"step {worst}: felix {ours[worst]:.6f} vs TRL {theirs[worst]:.6f}; "
                                  f"first steps felix {[round(ours[s], 5) for s in range(1, 6)]} "
                                  f"TRL {[round(theirs[s], 5) for s in range(1, 6)]}")
