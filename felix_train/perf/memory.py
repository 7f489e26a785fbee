"""Predicted peak memory of a job: weights, gradients, optimizer state, activations (a documented formula).

Parameters are counted from the model folder's safetensors headers (JSON, no torch). Bytes:

- weights: every parameter at its training dtype (fp32; a bf16 job keeps the frozen LLM base in bf16);
- trainable part: + gradient (4 B) + AdamW's two moments (8 B) per trainable parameter (fp32 master copy);
  trainable = every parameter (GLiNER2 `full`), LoRA adapters `r × (in + out)` per targeted 2-D weight
  (+ GLiNER2's task heads in full, as its trainer does);
- activations (Korthikanti et al. 2022, per layer `s·b·h·(34 + 5·a·s/h)` bytes in 16-bit, ×2 in fp32) for the
  longest batch (`batch_size` × the longest record, at most `max_length`; GLiNER2 words × 1.3 sub-word tokens),
  + LLM logits `b·s·V·4 B × 2` (values and gradient); with activation checkpointing, each layer keeps only
  its input (`s·b·h` values) and one layer's full activations live at a time (recomputed in the backward);
- a runtime baseline (the interpreter, torch, the libraries, the data): the table row's measured
  `peak - formula` when one exists, else `DEFAULT_BASELINE_MB` (measured on this project's CPU jobs).

The prediction is compared with the measured peak RSS (CPU) or max allocated (CUDA) that every completed job
records in its throughput-table row.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

DEFAULT_BASELINE_MB = 700.0
WORDS_TO_SUBWORDS = 1.3
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}
LORA_ENCODER_PATTERNS = ("query", "key", "value", "dense")


def tensor_shapes(model_path: Path) -> dict[str, tuple[list[int], str]]:
    """{name: (shape, dtype)} of every tensor in the folder's `*.safetensors` files (headers only)."""
    out: dict[str, tuple[list[int], str]] = {}
    for file in sorted(Path(model_path).glob("*.safetensors")):
        with open(file, "rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = (list(info["shape"]), info["dtype"])
    return out


def _config(model_path: Path) -> dict:
    for rel in ("config.json", "encoder_config/config.json"):
        p = Path(model_path) / rel
        if p.is_file():
            data = json.loads(p.read_text())
            if "hidden_size" in data or rel.startswith("encoder"):
                return data
    enc = Path(model_path) / "encoder_config" / "config.json"
    return json.loads(enc.read_text()) if enc.is_file() else {}


def parameter_counts(shapes: dict, *, family: str, training_type: str, lora_r: int,
                     targets: list[str] | str | None) -> tuple[int, int]:
    """(all parameters, trainable parameters) for the job's training type (see the module docstring)."""
    total = sum(math.prod(s) for s, _ in shapes.values())
    if training_type == "full":
        return total, total
    trainable = 0
    for name, (shape, _) in shapes.items():
        if family == "gliner2" and not name.startswith("encoder."):
            trainable += math.prod(shape)  # task heads: trained in full (and LoRA-targeted linears replaced by them)
            continue
        if len(shape) != 2 or not name.endswith(".weight") or "embed" in name or "lm_head" in name:
            continue
        if family == "gliner2":
            hit = any(p in name for p in LORA_ENCODER_PATTERNS)
        else:
            hit = targets in (None, "all-linear") or any(f".{t}." in name for t in (targets or []))
        if hit:
            trainable += lora_r * (shape[0] + shape[1])
    return total, trainable


def predict_memory(model_path: Path, *, family: str, training_type: str, lora_r: int, targets,
                   batch_size: int, seq_len: int, bf16_base: bool = False,
                   baseline_mb: float | None = None, checkpointing: bool = False) -> dict:
    """The predicted peak and its parts, in MB (see the module docstring)."""
    shapes = tensor_shapes(model_path)
    total, trainable = parameter_counts(shapes, family=family, training_type=training_type, lora_r=lora_r,
                                        targets=targets)
    cfg = _config(model_path)
    h = int(cfg.get("hidden_size") or cfg.get("d_model") or 256)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 2)
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head") or 4)
    s = max(1, int(seq_len * (WORDS_TO_SUBWORDS if family == "gliner2" else 1)))
    b = batch_size
    frozen = total - (trainable if training_type == "full" else 0)
    mb = 1024 * 1024
    weights = (frozen * (2 if bf16_base else 4) + (trainable if training_type == "full" else 0) * 4) / mb
    if training_type != "full":
        weights += trainable * 4 / mb if family != "gliner2" else 0  # LoRA adapters (GLiNER2 heads are in `total`)
    grads = trainable * 4 / mb
    optimizer = trainable * 8 / mb
    per_layer = s * b * h * (34 + 5 * heads * s / h) * 2 / mb
    activations = (layers * s * b * h * 4 / mb + per_layer) if checkpointing else layers * per_layer
    if family != "gliner2":
        activations += b * s * int(cfg.get("vocab_size") or 0) * 4 * 2 / mb
    formula = weights + grads + optimizer + activations
    base = DEFAULT_BASELINE_MB if baseline_mb is None else baseline_mb
    return {"peak_mb": round(formula + base, 1), "formula_mb": round(formula, 1), "baseline_mb": round(base, 1),
            "baseline_from": "table row (measured peak - formula)" if baseline_mb is not None else "default",
            "weights_mb": round(weights, 1), "gradients_mb": round(grads, 1), "optimizer_mb": round(optimizer, 1),
            "activations_mb": round(activations, 1), "parameters": total, "trainable_parameters": trainable,
            "batch_shape": [b, s]}
