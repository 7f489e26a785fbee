"""Shared pieces of the decoder-LLM evals (`eval_sft.py`, `eval_dpo.py`, `eval_grpo.py`): finding and loading a
model, reading data, scoring sequences and greedy generation. Not a script: the evals import it.

A MODEL argument is any of:
- a felix job id (`$FELIX_HOME/jobs/<id>/model`), or a job folder (`.../jobs/<id>`);
- a model folder: a PEFT LoRA adapter (`adapter_config.json`; loaded onto its base, so the base model is
  the adapter disabled) or a full model (`config.json`; felix's `model/merged/` is one);
- a catalog id (`felix/tiny-llm`, `HuggingFaceTB/SmolLM2-135M-Instruct`): the base model itself, so a
  fine-tuned model can be compared with where it started.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
try:
    import felix_train  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))


def felix_home() -> Path:
    return Path(os.environ.get("FELIX_HOME", "~/.felix")).expanduser()


@dataclass
class ModelRef:
    """Where a model's weights are: `path` (adapter or full model), and the base under an adapter."""

    arg: str
    path: Path
    adapter: bool
    base: Path | None  # the base model folder under an adapter
    job_dir: Path | None  # the felix job, when the model came from one

    def spec(self) -> dict:
        """The job's resolved spec (spec.json), {} outside a job."""
        if self.job_dir is None or not (self.job_dir / "spec.json").exists():
            return {}
        return json.loads((self.job_dir / "spec.json").read_text(encoding="utf-8"))

    def describe(self) -> dict:
        return {"arg": self.arg, "path": str(self.path), "adapter": self.adapter,
                "base": str(self.base) if self.base else None, "job": self.job_dir.name if self.job_dir else None}


def _catalog_path(model_id: str) -> Path | None:
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model

    entry = get_entry(model_id)
    return Path(resolve_model(entry)) if entry is not None else None


def _base_of(adapter: Path, job_dir: Path | None) -> Path:
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and Path(base).is_dir():
        return Path(base)
    candidates = []
    if job_dir is not None and (job_dir / "spec.json").exists():
        spec = json.loads((job_dir / "spec.json").read_text(encoding="utf-8"))
        candidates.append(spec.get("catalog_model") or spec.get("base_model"))
    candidates.append(base)
    for model_id in filter(None, candidates):
        path = _catalog_path(model_id)
        if path is not None:
            return path
    raise SystemExit(f"error: cannot find the base model of the adapter in {adapter} "
                     f"(adapter_config.json names {base!r}); pass --base DIR")


def resolve_model_arg(arg: str, base: str | None = None) -> ModelRef:
    """A MODEL argument (see the module docstring) as a `ModelRef`; SystemExit with what was tried if none fits."""
    path = Path(arg).expanduser()
    job_dir = None
    if not path.exists() and "/" not in arg and os.sep not in arg:
        job_dir = felix_home() / "jobs" / arg
        path = job_dir / "model"
    elif path.is_dir() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists() \
            and (path / "model").is_dir():
        job_dir, path = path, path / "model"
    elif path.is_dir() and path.parent.parent.name == "jobs":
        job_dir = path.parent
    if path.is_dir() and (path / "adapter_config.json").exists():
        base_path = Path(base) if base else _base_of(path, job_dir)
        return ModelRef(arg, path, True, base_path, job_dir)
    if path.is_dir() and (path / "config.json").exists():
        return ModelRef(arg, path, False, None, job_dir)
    catalog = _catalog_path(arg) if not path.exists() else None
    if catalog is not None:
        return ModelRef(arg, catalog, False, None, None)
    raise SystemExit(f"error: no model at {arg!r}: tried a job id ($FELIX_HOME/jobs/{arg}/model), a job folder, "
                     "a model or adapter folder, and a catalog id (`felix-train models list`)")


def load(ref: ModelRef, device: str):
    """(model in eval mode on `device`, tokenizer with a pad token). An adapter comes as a PeftModel."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_dir = ref.path if (ref.path / "tokenizer_config.json").exists() else (ref.base or ref.path)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if ref.adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(ref.base), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(ref.path))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32)
    return model.to(device).eval(), tokenizer


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def read_jsonl(path: str | Path, *, skip: int = 0, limit: int | None = None) -> list[dict]:
    """Records of a JSONL file (blank lines ignored), after the first `skip`, at most `limit`."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(f"error: {path}:{lineno}: invalid JSON: {err.msg}") from None
    out = out[skip:]
    return out[:limit] if limit is not None else out


def sequence_scores(model, rows: list[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int,
                    device: str) -> list[dict[str, float]]:
    """For each (input_ids, labels) row: summed log-prob of the labelled tokens (labels != -100), their count,
    and how many of them the model's top-1 prediction gets right."""
    import torch

    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths together: less padding
    results: dict[int, dict[str, float]] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(rows[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq, lab = rows[i]
                ids[row, :len(seq)] = torch.tensor(seq)
                labels[row, :len(lab)] = torch.tensor(lab)
                mask[row, :len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            target = labels[:, 1:].to(device)
            valid = target != -100
            # log p(target) = logit(target) - logsumexp(logits): no [batch, length, vocab] log-softmax kept
            picked = (logits.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                      - torch.logsumexp(logits, dim=-1)) * valid
            correct = (logits.argmax(-1) == target) & valid
            del logits
            for row, i in enumerate(idx):
                results[i] = {"logp": float(picked[row].sum()), "tokens": int(valid[row].sum()),
                              "correct": int(correct[row].sum())}
    return [results[i] for i in range(len(rows))]


def generate_greedy(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, batch_size: int,
                    device: str) -> list[str]:
    """Greedy completions (special tokens dropped) of tokenized prompts, batched with left padding."""
    import torch

    outputs: dict[int, str] = {}
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
            for row, i in enumerate(idx):
                outputs[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
    return [outputs[i] for i in range(len(prompts))]


def emit(report: dict, out: str | None) -> None:
    """The JSON report on stdout, and in `out` when given."""
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = round(time.perf_counter() - self.t0, 3)


def meta(ref: ModelRef, data: str, device: str, **extra: Any) -> dict:
    import torch

    return {"model": ref.describe(), "data": str(data), "device": device, "threads": torch.get_num_threads(), **extra}
