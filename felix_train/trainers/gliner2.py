"""GLiNER2 fine-tuning (LoRA or full) over gliner2's own `ExtractorTrainer`.

`run(ctx)` is the trainer the dispatch table calls for `(gliner2, sft)`. It reads
top to bottom like a recipe: `prepare_data` → `FelixGLiNER2Trainer` (+ `restore` when
resuming) → `FelixGLiNER2Trainer.fit` → `_export`. gliner2 supplies the model, the collator, LoRA targeting, the optimizer
groups (encoder vs task LR), the schedule, the micro-batch backward with non-finite
guarding, and the clipped optimizer step; this module adds what its `train()` lacks:

- data hygiene: every entity record lists every entity label of its dataset (`[]` =
  none of this type), or gliner2 learns no negatives (and rejects `"entities": {}`);
  records are passed in memory, so gliner2 never shuffles a caller's list or writes
  `.lengths.*` files next to a dataset (the prepared JSONL lands in the job's
  `work/gliner2/` for inspection);
- the count-head loss for entity tasks (gliner2 2.1.0 skips it, so on entity-only data
  the count head is never trained, and once it predicts 0 inference returns no entities);
- per-step progress, metrics, stop/preempt polling, and checkpoints through the job's
  `CheckpointManager` with everything needed to resume bit-exactly (optimizer,
  scheduler, scaler, Python/NumPy/torch RNG, data order and position);
- evaluation: eval loss plus precision/recall/F1 of what the model's own extraction
  returns (threshold 0.5) against gold, per label and micro: entity mentions by exact text
  per record and label (multisets, `felix_train.metrics_ner`), classifications by label,
  relations by (head, tail), structures by (field, value);
- the final model in `job/model/`, loadable with no felix code.

A checkpoint folder (`checkpoints/<uuid>/`, committed by the job's CheckpointManager) holds
`adapter/` (LoRA: PEFT adapter, holding any fully trained task heads too) or `model/` (full: a gliner2 folder `GLiNER2.from_pretrained`
loads), `training_state.pt` (optimizer, scheduler, GradScaler, torch/CUDA RNG; load with
`weights_only=True`) and `trainer_state.json` (step, epoch, next batch, the epoch's record
order and its seed, Python/NumPy RNG, running loss sums, the last eval). Resuming restores
all of it and skips the batches already seen, so a preempted run ends with the same weights
as an uninterrupted one (bit-exact on CPU). A checkpoint UUID given as `base_model`
("continue") starts from its weights (LoRA: its adapter on the same base) with a fresh
optimizer, schedule and data order.

Mapping of the spec: `learning_rate` is the task heads' LR (their weights, or their LoRA
adapters where they are LoRA targets); `engine.encoder_learning_rate` is the encoder's LR: its
LoRA adapters' under LoRA (default learning_rate / 4), its weights' in full training (default
learning_rate / 50). `engine.lora.target_modules` names gliner2 target groups (`all-linear` =
gliner2's default targets: the encoder's query/key/value/dense and every linear layer of the
task heads); a task head none of whose layers is a target is not left frozen, as gliner2 would
leave it, but trained in full (PEFT `modules_to_save`) and saved with the adapter. The catalog's
built bases, whose heads are fresh, target the encoder only. Entity types are shuffled in each
training record, and gliner2's synthetic label names (`entity 1`, ...) are off when no record
carries label descriptions (`set_label_sampling`). Eval asks for the entity types in sorted
order, whatever order training used. `engine.max_length` and `length_policy` count words as
gliner2 splits them (its collator truncates words, not sub-word tokens). Batches are length-grouped
(`epoch_order`); the optimizer is torch's fused AdamW. Checkpoints every `engine.save_steps` or
each epoch, eval every `engine.eval.steps` or each epoch, and both at the last step.
GLiNER2 LoRA always writes `model/merged/` (whatever `engine.export.merged` says).

Distributed (`engine.distributed`, `accelerate launch`): DDP only, on GPUs (NCCL) or CPUs
(gloo). `engine.batch_size` is per process: each rank takes its slice of every global batch
of the same epoch order, and a step covers `batch_size × gradient_accumulation_steps ×
num_processes` records. Rank 0 writes the checkpoints, with every rank's RNG state; a job
resumes exactly on the same number of processes, and on another one at the same place in the
epoch order (rounded down to a whole batch), with as many steps as the remaining epochs then
need. FSDP and DeepSpeed launches are refused (`check_launch`).

Losses are reported per record (gliner2 sums its loss over a batch; felix divides by
the records in the window so train and eval losses compare across batch sizes).

Final model choice: when an eval set exists, the model written to `job/model/` is the
best checkpoint by `eval_f1` if that is strictly better than the last step's, else the
last step's weights; `felix_model.json` and the job metrics (`final_model_from`,
`final_model_step`) say which.

Heavy imports (torch, gliner2, peft) happen in this module only, which the dispatch
table imports only when a GLiNER2 job runs.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import shutil
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from gliner2.training.trainer import ExtractorCollator, ExtractorDataset, ExtractorTrainer, TrainingConfig, get_scheduler
from tqdm.auto import tqdm

from felix_train.catalog import TrainingType
from felix_train.errors import CheckpointNotFound, DatasetError, ErrorItem, FelixError, SpecError
from felix_train.jobs import atomic_write_json, atomic_write_text, utcnow
from felix_train.metrics_ner import normalize_mention, prf, score_entities
from felix_train.spec import LengthPolicy
from felix_train.trainers.context import (
    Outcome, ResolvedDataset, StopReason, TrainContext, TrainResult, barrier, distributed,
)

# Files inside a checkpoint folder.
ADAPTER_DIR = "adapter"  # LoRA: PEFT adapter (adapter_config.json + adapter_model.safetensors)
MODEL_DIR = "model"  # full: gliner2 save_pretrained folder
TRAINING_STATE = "training_state.pt"  # optimizer, scheduler, scaler, torch RNG (torch.load weights_only)
TRAINER_STATE = "trainer_state.json"  # step, data position and order, Python/NumPy RNG, running sums

# What "all-linear" means for GLiNER2: gliner2's own default LoRA targets (the
# encoder's query/key/value/dense layers and every linear layer of the task heads).
GLINER2_DEFAULT_TARGETS = tuple(TrainingConfig().lora_target_modules)

# Encoder LR = learning_rate / divisor unless `engine.encoder_learning_rate` is set. Full
# training moves the pretrained encoder gently; LoRA adapters start at zero and need more.
FULL_ENCODER_LR_DIVISOR = 50
LORA_ENCODER_LR_DIVISOR = 4

# DDP without re-broadcasting buffers at every forward (as gliner2 does); torch 2.13 renamed the argument
_DDP_PARAMS = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
_NO_BUFFER_SYNC = {"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_PARAMS else {"broadcast_buffers": False}

EVAL_THRESHOLD = 0.5
MAX_COUNT = 19  # gliner2's count head predicts 0..19


# =============================================================================
# Data
# =============================================================================

@dataclass
class PreparedData:
    """Records in gliner2's `{"input", "output"}` format, ready to train and evaluate on."""

    train: list[dict]
    eval: list[dict]
    collator_max_len: int | None  # word tokens; set when `length_policy: truncate`
    per_dataset: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: int = 0
    truncated: int = 0


def _read_jsonl(ds: ResolvedDataset) -> list[tuple[int, dict]]:
    """(line number, record) pairs of a dataset file; a bad line is a DatasetError naming it."""
    out = []
    try:
        fh = open(ds.path, encoding="utf-8")
    except OSError as err:
        raise DatasetError(f"dataset {ds.name!r}: cannot read {ds.path}: {err}") from err
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"dataset {ds.name!r} line {lineno}: invalid JSON ({err.msg}); "
                                   "fix the line or re-register the dataset") from err
            if not isinstance(obj, dict) or not isinstance(obj.get("input"), str) or not isinstance(obj.get("output"), dict):
                raise DatasetError(f"dataset {ds.name!r} line {lineno}: expected a gliner2 record "
                                   '{"input": str, "output": {...}}; got keys '
                                   f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
            out.append((lineno, obj))
    if not out:
        raise DatasetError(f"dataset {ds.name!r} ({ds.path}) holds no records")
    return out


def entity_labels(records: Iterable[dict]) -> list[str]:
    """Every entity label declared in the records (entities or entity_descriptions), in first-seen order."""
    labels: dict[str, None] = {}
    for rec in records:
        out = rec.get("output") or {}
        for key in ("entities", "entity_descriptions"):
            if isinstance(out.get(key), dict):
                labels.update(dict.fromkeys(out[key]))
    return list(labels)


def fill_entity_labels(records: list[dict], labels: list[str]) -> list[dict]:
    """Copies of the records in which every entity record lists every label (`[]` = none of it).

    gliner2 learns only the types a record lists, so without this a sentence with no
    `person` teaches nothing about `person`; it also rejects `"entities": {}`.
    Records without an `entities` task are left as they are.
    """
    out = []
    for rec in records:
        output = rec["output"]
        if isinstance(output.get("entities"), dict):
            ents = dict(output["entities"])
            for label in labels:
                ents.setdefault(label, [])
            rec = {**rec, "output": {**output, "entities": ents}}
        out.append(rec)
    return out


def _word_count(text: str, splitter) -> int:
    return sum(1 for _ in splitter(text, lower=False))


def _split_eval(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded held-out split: round(n × fraction) records (at least 1, leaving at least 1 to train on)."""
    n = len(records)
    if fraction <= 0 or n < 2:
        return records, []
    k = min(max(1, round(n * fraction)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def prepare_data(ctx: TrainContext, word_splitter) -> PreparedData:
    """Load, label-fill, length-check and split the job's datasets (DatasetError on bad data)."""
    spec = ctx.spec
    max_len = spec.engine.max_length
    policy = spec.engine.length_policy
    too_long: list[str] = []
    dropped = truncated = 0

    def load(ds: ResolvedDataset) -> list[dict]:
        nonlocal dropped, truncated
        rows = _read_jsonl(ds)
        recs = fill_entity_labels([r for _, r in rows], entity_labels(r for _, r in rows))
        kept = []
        for (lineno, _), rec in zip(rows, recs):
            words = _word_count(rec["input"], word_splitter)
            if max_len and words > max_len:
                if policy == LengthPolicy.ERROR:
                    too_long.append(f"{ds.name} line {lineno}: {words} words")
                    continue
                if policy == LengthPolicy.DROP:
                    dropped += 1
                    continue
                truncated += 1
            kept.append(rec)
        return kept

    per_dataset: dict[str, dict[str, int]] = {}
    train: list[dict] = []
    held: list[dict] = []
    for ds in ctx.train_data:
        recs = load(ds)
        if ctx.eval_data is None:
            # split each dataset on its own so every dataset is represented in eval
            tr, ev = _split_eval(recs, spec.engine.eval.fraction, spec.engine.seed)
        else:
            tr, ev = recs, []
        per_dataset[ds.name] = {"records": len(recs), "train": len(tr), "eval": len(ev)}
        train.extend(tr)
        held.extend(ev)
    if ctx.eval_data is not None:
        held = load(ctx.eval_data)
        per_dataset.setdefault(ctx.eval_data.name, {})["eval_dataset"] = len(held)
    if too_long:
        shown = "; ".join(too_long[:20]) + (f"; ... and {len(too_long) - 20} more" if len(too_long) > 20 else "")
        raise DatasetError(
            f"{len(too_long)} record(s) are longer than engine.max_length={max_len} words: {shown}. "
            "Raise `engine.max_length`, or set `engine.length_policy: truncate` or `drop`.",
            errors=[ErrorItem(("engine", "max_length"), line, "record_too_long") for line in too_long[:100]],
        )
    if not train:
        raise DatasetError("no training records are left after the eval split and length policy; "
                           "add records or lower `engine.eval.fraction`")
    return PreparedData(train=train, eval=held, per_dataset=per_dataset, dropped=dropped, truncated=truncated,
                        collator_max_len=max_len if policy == LengthPolicy.TRUNCATE else None)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# =============================================================================
# Model
# =============================================================================

def load_gliner2(path: str | os.PathLike):
    """`GLiNER2.from_pretrained` on a local folder (paths must be `str`)."""
    from gliner2 import GLiNER2

    return GLiNER2.from_pretrained(str(path))


def add_entity_count_loss(model) -> None:
    """Train gliner2's count head on entity tasks too (a required fix for gliner2 2.1.0).

    `SpanExtractorModel._compute_sample_loss` skips the count loss for `entities`
    ("legacy behaviour"), yet inference predicts the entity count with the same head
    and extracts nothing when it predicts 0: a model fine-tuned on entities alone from
    fresh heads returns no entities at all. The entity task's gold count is always 1 (one
    instance holding every type), so the loss teaches the head to open that instance.
    The method is replaced on this instance only; the class and saved files are unchanged.
    """
    original = getattr(model, "_compute_sample_loss", None)
    if original is None or getattr(original, "_felix_entity_count", False):
        return  # not a span model (the boundary architecture has its own count head), or done

    def compute_sample_loss(token_embeddings, embs_per_schema, task_types, structure_labels, device,
                            span_scores_per_schema=None):
        losses = original(token_embeddings=token_embeddings, embs_per_schema=embs_per_schema,
                          task_types=task_types, structure_labels=structure_labels, device=device,
                          span_scores_per_schema=span_scores_per_schema)
        counts, p_embs = [], []
        for i, task_type in enumerate(task_types):
            if task_type != "entities" or not embs_per_schema[i] or structure_labels[i][0] == 0:
                continue
            counts.append(min(int(structure_labels[i][0]), MAX_COUNT))
            p_embs.append(embs_per_schema[i][0])  # the [P] token of the entity schema
        if counts:
            logits = model.count_pred(torch.stack(p_embs))
            target = torch.tensor(counts, dtype=torch.long, device=logits.device)
            losses["count"] = losses["count"] + F.cross_entropy(logits, target, reduction="sum")
        return losses

    compute_sample_loss._felix_entity_count = True
    model._compute_sample_loss = compute_sample_loss


def set_label_sampling(model, records: list[dict]) -> list[str]:
    """Adjust gliner2's training-time label sampling for felix data; returns what changed, for the log.

    - Entity types are shuffled in every training record (gliner2 2.1.0 keeps the listed
      order). felix lists every label of a dataset in every record, in one order, so without
      shuffling the model can learn "the first [E] is person" instead of reading the label:
      measured on the MiniLM quickstart, such a model scored eval F1 0.93 with the training
      order of labels and 0.10 with the labels sorted (types permuted by position).
    - Synthetic label names are off when no training record describes its labels. With
      probability `synthetic_entity_label_prob` (0.2) gliner2 renames a record's types (and
      structure fields) to `entity 1`, `entity 2`, ... so that the model learns to read
      `entity_descriptions` / `json_descriptions`; without descriptions such a record carries
      no label information, and one record in five is spent on it.
    """
    sampling = getattr(getattr(model, "processor", None), "sampling_config", None)
    if sampling is None:
        return []
    changed = []
    if hasattr(sampling, "shuffle_entities") and not sampling.shuffle_entities:
        sampling.shuffle_entities = True
        changed.append("entity types shuffled in each training record")
    described = any(isinstance(r.get("output"), dict)
                    and (r["output"].get("entity_descriptions") or r["output"].get("json_descriptions"))
                    for r in records)
    if not described and getattr(sampling, "synthetic_entity_label_prob", 0):
        sampling.synthetic_entity_label_prob = 0.0
        changed.append("no label descriptions in the data: synthetic label names (`entity 1`, ...) off")
    return changed


def lora_targets(spec_targets: list[str] | str | None) -> list[str]:
    """gliner2 LoRA target groups for `engine.lora.target_modules` (SpecError on an unknown name)."""
    if spec_targets in (None, "all-linear") or spec_targets == ["all-linear"]:
        return list(GLINER2_DEFAULT_TARGETS)
    from gliner2.training.lora_targets import ENCODER_PATTERNS, TASK_MODULES

    aliases = {"all_task_heads", "classification_head", "extractive_head", "relation_head", "record_head"}
    valid = {"encoder", *(f"encoder.{p}" for p in ENCODER_PATTERNS), *TASK_MODULES, *aliases}
    bad = [t for t in spec_targets if t not in valid]
    if bad:
        raise SpecError([ErrorItem(("engine", "lora", "target_modules"),
                                   f"unknown GLiNER2 LoRA target(s) {bad}; use `all-linear` or any of "
                                   f"{', '.join(sorted(valid))}", "lora_target_invalid")])
    return list(spec_targets)


def lora_plan(model, targets: list[str]) -> tuple[list[str], list[str]]:
    """(linear layers that get LoRA adapters, task heads trained in full) for gliner2 target groups.

    The adapted layers are what gliner2's own LoRA picks for `targets`; a task head
    (`span_rep`, `classifier`, `count_embed`, `count_pred`, ...) none of whose layers is
    adapted trains in full instead of staying frozen.
    """
    from gliner2.training.lora_targets import _resolve_targets, _task_module_names

    lora_modules = _resolve_targets(model, list(targets))
    present = {name for name, _ in model.named_children()}
    heads = [h for h in _task_module_names(model) if h in present]
    full = [h for h in heads if not any(m == h or m.startswith(f"{h}.") for m in lora_modules)]
    return lora_modules, full


def _precision(spec_precision: str) -> tuple[bool, bool]:
    """(fp16, bf16) for `engine.precision` on this machine."""
    cuda = torch.cuda.is_available()
    if spec_precision == "fp16":
        return cuda, False
    if spec_precision == "bf16":
        return False, cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if spec_precision == "auto":
        return False, cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return False, False


# =============================================================================
# Evaluation: exact-match precision/recall/F1 of the model's own extraction
# =============================================================================

def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("text", value.get("value"))
    if value is None:
        return None
    value = normalize_mention(value)
    return value or None


def _values(value: Any) -> list[str]:
    if isinstance(value, dict) and "value" in value and "choices" in value:
        value = value["value"]
    if isinstance(value, (list, tuple)):
        return [t for v in value if (t := _text(v))]
    t = _text(value)
    return [t] if t else []


def _eval_schema(output: dict) -> dict:
    """The extraction schema of a gold record: its tasks and labels, without the answers."""
    schema: dict[str, Any] = {}
    if isinstance(output.get("entities"), dict):
        # sorted, not the training order: a score that needs the labels in one order would hide a model
        # that learnt positions instead of label names (and scripts/eval_gliner.py sorts them too)
        schema["entities"] = {label: "" for label in sorted(output["entities"])}
        if output.get("entity_descriptions"):
            schema["entity_descriptions"] = dict(output["entity_descriptions"])
    if output.get("classifications"):
        schema["classifications"] = [
            {k: v for k, v in c.items() if k not in ("true_label",)} | {"multi_label": bool(c.get("multi_label", False))}
            for c in output["classifications"]
        ]
    rels = [r for r in output.get("relations") or [] for name, f in r.items() if set(f) == {"head", "tail"}]
    if rels:
        names = list(dict.fromkeys(name for r in rels for name in r))
        schema["relations"] = [{name: {"head": "", "tail": ""}} for name in names]
    if output.get("json_structures"):
        structs: dict[str, dict] = {}
        for item in output["json_structures"]:
            for name, fields in item.items():
                target = structs.setdefault(name, {})
                for fname, fval in fields.items():
                    if isinstance(fval, dict) and "choices" in fval:
                        target[fname] = {"value": "", "choices": list(fval["choices"])}
                    else:
                        target.setdefault(fname, "")
        schema["json_structures"] = [{name: fields} for name, fields in structs.items()]
    return schema


def _gold_items(output: dict) -> dict[str, list]:
    """Non-entity gold facts, keyed by metric label: classification task, relation or structure name."""
    items: dict[str, list] = {}
    for c in output.get("classifications") or []:
        true = c.get("true_label")
        for t in true if isinstance(true, list) else [true]:
            if t is not None:
                items.setdefault(f"classification:{c['task']}", []).append(str(t))
    for r in output.get("relations") or []:
        for name, f in r.items():
            if set(f) == {"head", "tail"} and _text(f["head"]) and _text(f["tail"]):
                items.setdefault(f"relation:{name}", []).append((_text(f["head"]), _text(f["tail"])))
    for s in output.get("json_structures") or []:
        for name, fields in s.items():
            for fname, fval in fields.items():
                for v in _values(fval):
                    items.setdefault(f"structure:{name}", []).append((fname, v))
    return items


def _pred_items(schema: dict, pred: dict) -> dict[str, list]:
    items: dict[str, list] = {}
    for c in schema.get("classifications") or []:
        got = pred.get(c["task"])
        got = got if isinstance(got, list) else [got]
        for g in got:
            label = g[0] if isinstance(g, (tuple, list)) else (g.get("label") if isinstance(g, dict) else g)
            if label is not None:
                items.setdefault(f"classification:{c['task']}", []).append(str(label))
    for r in schema.get("relations") or []:
        for name in r:
            for inst in (pred.get("relation_extraction") or {}).get(name) or []:
                head, tail = (inst.get("head"), inst.get("tail")) if isinstance(inst, dict) else inst
                if _text(head) and _text(tail):
                    items.setdefault(f"relation:{name}", []).append((_text(head), _text(tail)))
    for s in schema.get("json_structures") or []:
        for name in s:
            for inst in pred.get(name) or []:
                if isinstance(inst, dict):
                    for fname, fval in inst.items():
                        for v in _values(fval):
                            items.setdefault(f"structure:{name}", []).append((fname, v))
    return items


def extraction_metrics(model, records: list[dict], *, batch_size: int, max_len: int | None = None) -> dict[str, float]:
    """Micro and per-label precision/recall/F1 of `model.batch_extract` against gold (exact match).

    Entities are matched as multisets of normalised mention text per record and label
    (`felix_train.metrics_ner`); classifications by label, relations by (head, tail)
    text, structures by (field, value) text. Threshold 0.5.
    """
    from collections import Counter

    if not records:
        return {}
    schemas = [_eval_schema(r["output"]) for r in records]
    texts = [r["input"] for r in records]
    preds = model.batch_extract(texts, schemas, batch_size=batch_size, threshold=EVAL_THRESHOLD, max_len=max_len)

    counts: dict[str, list[int]] = {}
    ent_idx = [i for i, s in enumerate(schemas) if "entities" in s]
    if ent_idx:
        gold = [records[i]["output"]["entities"] for i in ent_idx]
        pred = [preds[i].get("entities") or {} for i in ent_idx]
        scored = score_entities(gold, pred, labels=sorted({lab for i in ent_idx for lab in schemas[i]["entities"]}))
        for label, m in scored["per_label"].items():
            counts[label] = [m["tp"], m["fp"], m["fn"]]
    for rec, schema, pred in zip(records, schemas, preds):
        gold_items, pred_items = _gold_items(rec["output"]), _pred_items(schema, pred)
        for key in set(gold_items) | set(pred_items):
            g, p = Counter(gold_items.get(key, [])), Counter(pred_items.get(key, []))
            tp = sum((g & p).values())
            c = counts.setdefault(key, [0, 0, 0])
            c[0] += tp
            c[1] += sum(p.values()) - tp
            c[2] += sum(g.values()) - tp

    out: dict[str, float] = {}
    micro = prf(*(sum(c[i] for c in counts.values()) for i in range(3)))
    out.update(eval_precision=micro["precision"], eval_recall=micro["recall"], eval_f1=micro["f1"],
               eval_support=micro["support"])
    for label in sorted(counts):
        m = prf(*counts[label])
        out[f"eval_f1/{label}"] = m["f1"]
        out[f"eval_precision/{label}"] = m["precision"]
        out[f"eval_recall/{label}"] = m["recall"]
    return out


# =============================================================================
# Checkpoint state
# =============================================================================

def _rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(state: dict, torch_state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state["torch_rng"])
    if torch.cuda.is_available() and torch_state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(torch_state["cuda_rng"])


@dataclass
class Position:
    """Where training stands: after `step` optimizer steps, next batch `batch` of epoch `epoch`."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0  # per-record loss sums over the whole run (train_loss)
    records_seen: int = 0
    runtime_s: float = 0.0  # training seconds before this process
    last_eval: dict = field(default_factory=dict)


# =============================================================================
# The trainer
# =============================================================================

class FelixGLiNER2Trainer(ExtractorTrainer):
    """gliner2's `ExtractorTrainer` with felix's loop: progress, eval, checkpoints, resume, stop.

    Reused from gliner2 unchanged: LoRA application and targeting, optimizer groups,
    scheduler, `_backward_one` (autocast, non-finite guarding), `_optimizer_step`
    (clipping, step, zero_grad), partial-accumulation handling. Overridden: where it
    writes (the job's work dir), logging setup (felix's reporter instead of
    `logging.basicConfig`), and `_setup_lora` (to load an existing adapter when
    resuming or continuing a checkpoint).

    Distributed (DDP over the process group the runner joined: gloo on CPU, NCCL on GPUs):
    every rank holds the whole model (`self.model` is the DDP wrapper, `unwrapped` the PEFT
    or GLiNER2 model under it), walks the same epoch order and takes its slice of each global
    batch (`engine.batch_size` records per rank); step losses and record counts are summed
    over the ranks; every rank evaluates the whole eval set (the same metrics everywhere);
    checkpoints are saved by every rank together, rank 0 writing them with every rank's RNG.
    """

    def __init__(self, model, config: TrainingConfig, *, ctx: TrainContext, data: PreparedData,
                 adapter_from: Path | None = None):
        self.ctx = ctx
        self.data = data
        self._adapter_from = adapter_from
        self.full_heads: list[str] = []  # LoRA: task heads trained in full (PEFT modules_to_save)
        dist = distributed()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)
        self._total_steps: int | None = None  # set by `restore` when the checkpoint had another global batch
        self._zero_loss_now = False  # a rank with no record of a short last batch: its stand-in counts for nothing
        self._lengths: list[int] | None = None  # words per training record, for length-grouped batches
        self._order_override: dict[int, list[int]] = {}  # epoch -> the order a resumed checkpoint recorded
        super().__init__(model, config)
        base = self.base_model
        arch = getattr(base, "architecture", "span")
        max_gold = (getattr(base.config, "boundary_head", None) or {}).get("max_gold_per_query", 32)
        common = dict(max_len=data.collator_max_len, architecture=arch, max_gold_per_query=max_gold,
                      on_capacity_exceeded=config.on_capacity_exceeded,
                      dedupe_contained_entity_spans=config.dedupe_contained_entity_spans)
        self.train_collator = ExtractorCollator(self.processor, is_training=True, **common)
        self.eval_collator = ExtractorCollator(self.processor, is_training=False, build_targets=True, **common)
        # in memory: gliner2 neither shuffles our list (shuffle=False) nor writes .lengths files
        self.train_dataset = ExtractorDataset(data.train, shuffle=False, validate=False)

    # -- gliner2 hooks -----------------------------------------------------------
    def _setup_output_dir(self):
        self.output_dir = Path(self.config.output_dir)
        self.logs_dir = self.output_dir / "logs"
        if self.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    def _setup_logging(self):
        self.wandb_run = None  # felix reports through ctx.reporter

    def _setup_lora(self):
        """LoRA on the targeted linear layers; task heads that are not LoRA targets train in full.

        gliner2's `_setup_lora` freezes everything and adapts only the targets, so a task
        head left out of the targets (or a head's non-linear parts: the count GRU, position
        embeddings) would stay frozen at its initial weights. Here every task head with no
        LoRA target inside it is a PEFT `modules_to_save` module instead: trained in full,
        saved inside the adapter, restored by `PeftModel.from_pretrained` and folded in by
        `merge_and_unload`, so adapter, resume and merged export need no felix code.
        """
        if not self.config.use_lora:
            return super()._setup_lora()
        from gliner2.training.lora import PeftModel, _cast_lora_dtype, _PeftLoraLayer

        for p in self.model.parameters():
            p.requires_grad = False
        if self._adapter_from is not None:
            self.model = PeftModel.from_pretrained(self.model, str(self._adapter_from), is_trainable=True)
        else:
            from peft import LoraConfig, get_peft_model

            lora_modules, full_heads = lora_plan(self.model, self.config.lora_target_modules)
            base_id = getattr(self.model, "name_or_path", "") or getattr(self.model.config, "_name_or_path", "") or None
            peft_config = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                                     lora_dropout=self.config.lora_dropout, target_modules=lora_modules,
                                     modules_to_save=full_heads or None, bias="none",
                                     use_dora=self.config.lora_use_dora, base_model_name_or_path=base_id)
            self.model = get_peft_model(self.model, peft_config)
        _cast_lora_dtype(self.model)
        self.lora_layers = {n: m for n, m in self.model.named_modules() if isinstance(m, _PeftLoraLayer)}
        self.model._lora_layers = self.lora_layers
        self.full_heads = sorted(self.model.peft_config["default"].modules_to_save or [])

    def _create_optimizer(self):
        """AdamW with the encoder's parameters at the encoder LR and the task heads' at the task LR.

        Full training splits as gliner2 does (`encoder` in the name). gliner2 puts every LoRA-run parameter in
        one group at the task LR; felix splits them the same way (encoder adapters at the encoder LR). The
        optimizer is torch's fused AdamW wherever torch has it (CPU and CUDA; gliner2 fuses on CUDA only):
        same update, one kernel: measured on 2 CPU cores, a step over 8M parameters 4.5x faster than `foreach`.
        """
        from torch.optim import AdamW

        encoder, task = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                in_encoder = (".encoder." in f".{name}") if self.config.use_lora else ("encoder" in name)
                (encoder if in_encoder else task).append(param)
        if not encoder and not task:
            raise FelixError("no trainable parameter; check `engine.lora.target_modules`")
        groups = [{"params": params, "lr": lr, "weight_decay": self.config.weight_decay}
                  for params, lr in ((encoder, self.config.encoder_lr), (task, self.config.task_lr)) if params]
        kwargs = {"betas": (self.config.adam_beta1, self.config.adam_beta2), "eps": self.config.adam_epsilon}
        try:
            return AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
            return AdamW(groups, foreach=True, **kwargs)

    def _setup_device(self):
        """One rank of a DDP run: this rank's GPU (LOCAL_RANK), else the CPU.

        gliner2's own set-up is CUDA/NCCL only (`config.local_rank`), and without it every
        rank would take `cuda:0`; felix places the model itself.
        """
        if self.world == 1:
            return super()._setup_device()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
            self.config.fp16 = self.config.bf16 = False
        self.is_distributed = True
        self.model.to(self.device)
        if not self.config.fp16 and not self.config.bf16:
            self.model.float()

    def _setup_distributed(self):
        """DDP over the (LoRA-wrapped) model on any device (gliner2's needs CUDA `device_ids`).

        `find_unused_parameters`: a batch without relations (say) leaves the relation head
        unused, and not the same head every step.
        """
        if not self.is_distributed:
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.unwrapped.register_forward_hook(self._zero_stand_in_loss)
        self.model = torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=ids, output_device=ids[0] if ids else None,
            find_unused_parameters=self.config.ddp_find_unused_parameters, static_graph=self.config.ddp_static_graph,
            gradient_as_bucket_view=True, **_NO_BUFFER_SYNC)

    def _zero_stand_in_loss(self, module, args, output):
        """Forward hook: a stand-in batch's loss times 0 (its backward still joins DDP's all-reduce)."""
        if self._zero_loss_now and isinstance(output, dict) and output.get("total_loss") is not None:
            return {**output, "total_loss": output["total_loss"] * 0.0}
        return output

    @property
    def unwrapped(self):
        """The model without its DDP wrapper: the PEFT model (LoRA) or the GLiNER2 model (full)."""
        return self.model.module if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model

    @property
    def base_model(self):
        """The GLiNER2 model under any DDP and PEFT wrapper (LoRA layers live inside it)."""
        get = getattr(self.unwrapped, "get_base_model", None)
        return get() if get is not None else self.unwrapped

    def _global_sum(self, *values: float) -> list[float]:
        """`values` summed over the ranks (one all-reduce); as they are in a single process."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        distributed().all_reduce(t)
        return t.tolist()

    # -- schedule ----------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        """Records per micro-batch over all ranks (`engine.batch_size` is per process)."""
        return self.config.batch_size * self.world

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_dataset) / self.global_batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.batches_per_epoch / self.config.gradient_accumulation_steps))

    @property
    def total_steps(self) -> int:
        if self._total_steps is not None:
            return self._total_steps
        if self.config.max_steps > 0:
            return self.config.max_steps
        return self.steps_per_epoch * self.config.num_epochs

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch_order(self, epoch: int) -> list[int]:
        """The epoch's record order, a function of (seed, epoch, global batch) alone: length-grouped batches.

        transformers' `get_length_grouped_indices` (what `group_by_length` uses): a random permutation cut into
        mega-batches of up to 50 batches, each sorted by length, so a batch holds records of similar length and
        pads little (its span grid is max words × max span width). Every record is seen once per epoch, as with a
        plain shuffle. Measured (`make bench`, MiniLM, one epoch of the quickstart data, 2 CPU cores): 26.8
        samples/s against 22.8 with a plain shuffle.
        A resumed epoch keeps the order its checkpoint recorded (another process count included).
        """
        if epoch in self._order_override:
            return list(self._order_override[epoch])
        from transformers.trainer_pt_utils import get_length_grouped_indices

        if self._lengths is None:
            self._lengths = [len(text.split()) for text, _ in (self.train_dataset[i] for i in range(len(self.train_dataset)))]
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        grouped = get_length_grouped_indices(self._lengths, self.global_batch_size, generator=g)
        # then the batches in random order (a mega-batch alone would run from its longest batch to its shortest)
        bs = self.global_batch_size
        batches = [grouped[i:i + bs] for i in range(0, len(grouped), bs)]
        last = batches.pop() if len(batches[-1]) < bs else None
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return [i for batch in batches + ([last] if last else []) for i in batch]

    def setup_optimization(self) -> None:
        self.optimizer = self._create_optimizer()
        self._setup_scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.fp16)

    def _setup_scheduler(self) -> None:
        """gliner2's LR schedule over `total_steps` (warm-up, then the decay to the last step)."""
        warmup = self.config.warmup_steps or int(self.total_steps * self.config.warmup_ratio)
        self.scheduler = get_scheduler(self.optimizer, self.config.scheduler_type, self.total_steps, warmup,
                                       self.config.num_cycles)
        self._planned_max_steps = self.total_steps

    # -- checkpoints ---------------------------------------------------------------
    def save_weights(self, folder: Path) -> None:
        """LoRA: the PEFT adapter under `adapter/`; full: the gliner2 model under `model/`."""
        if self.config.use_lora:
            self.unwrapped.save_pretrained(str(folder / ADAPTER_DIR))
        else:
            self.base_model.save_pretrained(str(folder / MODEL_DIR))

    def save_checkpoint(self, pos: Position, metrics: dict) -> Any:
        """Every rank calls it, at the same steps; rank 0 writes and commits it, with every rank's RNG state.

        The other ranks return None once rank 0 has committed (a barrier), so that every rank then
        sees the same checkpoints.
        """
        ctx = self.ctx
        torch_rng = {"torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        ranks_rng = None
        if self.world > 1:  # each rank's collator draws from its own Python RNG, and dropout from its torch RNG
            ranks_rng = [None] * self.world
            distributed().all_gather_object(ranks_rng, {"rng": _rng_state(), **torch_rng})
        if not ctx.is_main_process:
            barrier()
            return None
        staged = ctx.checkpoints.stage()
        try:
            self.save_weights(staged)
            torch.save({
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                **torch_rng,
                "ranks_rng": ranks_rng,  # [rank] -> {"rng": Python/NumPy, "torch_rng", "cuda_rng"}; None in one process
            }, staged / TRAINING_STATE)
            state = {
                "step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
                "epoch_order": self.epoch_order(pos.epoch) if pos.batch else None,
                "data_seed": self.config.seed, "num_train_records": len(self.train_dataset),
                "total_steps": self.total_steps, "loss_sum": pos.loss_sum, "records_seen": pos.records_seen,
                "runtime_s": pos.runtime_s + (time.monotonic() - self._t0), "last_eval": pos.last_eval,
                "training_type": "lora" if self.config.use_lora else "full", "rng": _rng_state(),
                "world_size": self.world, "global_batch_size": self.global_batch_size,
            }
            atomic_write_json(staged / TRAINER_STATE, state)
            manifest = ctx.checkpoints.commit(staged, step=pos.step, epoch=self.epoch_float(pos), metrics=metrics)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise  # the other ranks wait at the barrier until the launcher ends them
        barrier()
        if manifest is not None:
            ctx.reporter.log(f"checkpoint {manifest.uuid} at step {pos.step} (epoch {self.epoch_float(pos):.2f})")
        return manifest

    def restore(self, folder: Path) -> Position:
        """Load optimizer, scheduler, scaler, RNG and data position from a checkpoint of this job."""
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        if state.get("num_train_records") != len(self.train_dataset) or state.get("data_seed") != self.config.seed:
            raise FelixError(
                f"checkpoint {folder.name} was written for {state.get('num_train_records')} training records and seed "
                f"{state.get('data_seed')}, but this run has {len(self.train_dataset)} and seed {self.config.seed}; "
                "the datasets changed since the job started. Start a new job (a checkpoint UUID as base_model "
                "continues from its weights)."
            )
        if state.get("batch") and state.get("epoch_order"):
            order = state["epoch_order"]
            if sorted(order) != list(range(len(self.train_dataset))):
                raise FelixError(f"checkpoint {folder.name}: its epoch order is not a permutation of this run's "
                                 f"{len(self.train_dataset)} training records; start a new job")
            self._order_override[state["epoch"]] = order  # the rest of that epoch as it was begun
        torch_state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(torch_state["optimizer"])
        self.scheduler.load_state_dict(torch_state["scheduler"])
        self.scaler.load_state_dict(torch_state["scaler"])
        rng = state["rng"]
        ranks_rng = torch_state.get("ranks_rng")
        if ranks_rng and self.rank < len(ranks_rng):  # this rank's own (rank 0's for a rank the writer lacked)
            rng, torch_state = ranks_rng[self.rank]["rng"], {**torch_state, **ranks_rng[self.rank]}
        _set_rng_state(rng, torch_state)
        pos = Position(step=state["step"], epoch=state["epoch"], batch=state["batch"], loss_sum=state["loss_sum"],
                       records_seen=state["records_seen"], runtime_s=state["runtime_s"],
                       last_eval=state.get("last_eval") or {})
        saved_global = state.get("global_batch_size", self.config.batch_size)
        if saved_global != self.global_batch_size:
            self._rescale(pos, state, saved_global)
        return pos

    def _rescale(self, pos: Position, state: dict, saved_global: int) -> None:
        """Resume a checkpoint written with another global batch (another number of processes or batch size).

        The position in the epoch's order is kept, rounded down to a whole batch (a few records may
        be seen twice); without `engine.max_steps` the remaining epochs take as many steps as they now
        need, and the LR schedule is rebuilt over the new total (its step count carries on), as HF does.
        """
        old_batch = pos.batch
        pos.batch = pos.batch * saved_global // self.global_batch_size
        if self.config.max_steps <= 0:
            left_in_epoch = math.ceil((self.batches_per_epoch - pos.batch) / self.config.gradient_accumulation_steps)
            self._total_steps = pos.step + left_in_epoch + (self.config.num_epochs - pos.epoch - 1) * self.steps_per_epoch
            scheduler_state = self.scheduler.state_dict()
            self._setup_scheduler()
            self.scheduler.load_state_dict(scheduler_state)
        self.ctx.reporter.log(
            f"resuming on {self.world} process(es) a checkpoint written by {state.get('world_size', 1)}: "
            f"batch {old_batch} of {saved_global} records is batch {pos.batch} of {self.global_batch_size} "
            f"in epoch {pos.epoch}; {self.total_steps} steps in all (was {state.get('total_steps')})", level="WARN")

    def epoch_float(self, pos: Position) -> float:
        return pos.epoch + pos.batch / max(self.batches_per_epoch, 1)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Eval loss (per record) and extraction P/R/F1 on the eval records; {} without any."""
        records = self.data.eval
        if not records:
            return {}
        model = self.unwrapped  # every rank evaluates the whole eval set alike: no collectives, the same metrics
        was_training = model.training
        model.eval()
        self.processor.change_mode(is_training=False)
        bs = self.config.eval_batch_size
        use_amp = self.config.fp16 or self.config.bf16
        amp_dtype = torch.bfloat16 if self.config.bf16 else torch.float16
        total, n = 0.0, 0
        try:
            with torch.no_grad():
                for i in range(0, len(records), bs):
                    chunk = records[i:i + bs]
                    batch = self.eval_collator([(r["input"], r["output"]) for r in chunk])
                    with torch.amp.autocast(device_type=self.device.type, enabled=use_amp, dtype=amp_dtype):
                        out = model(batch)
                    loss = out.get("total_loss")
                    if loss is not None:
                        total += float(loss.detach().float().cpu())
                        n += len(chunk)
            metrics = {"eval_loss": total / n if n else float("nan")}
            metrics.update(extraction_metrics(self.base_model, records, batch_size=bs, max_len=self.data.collator_max_len))
        finally:
            if was_training:
                model.train()
            self.processor.change_mode(is_training=True)
        return metrics

    # -- the loop --------------------------------------------------------------------
    def fit(self, pos: Position, *, resumed_from: str | None = None) -> tuple[Outcome, Position, Any]:
        """Train from `pos` to the end, or until a stop/preempt request; checkpoints along the way."""
        ctx, cfg, spec = self.ctx, self.config, self.ctx.spec
        reporter = ctx.reporter
        total = self.total_steps
        nb = self.batches_per_epoch
        accum = cfg.gradient_accumulation_steps
        eval_steps = spec.engine.eval.steps
        save_steps = spec.engine.save_steps
        use_amp = cfg.fp16 or cfg.bf16
        amp_dtype = torch.bfloat16 if cfg.bf16 else torch.float16
        last_manifest = None
        saved_step = pos.step if resumed_from else -1
        window_loss, window_records = 0.0, 0

        self._t0 = time.monotonic()
        reporter.start_clock(pos.step)
        reporter.progress(pos.step, total, self.epoch_float(pos), force=True)
        self.model.train()
        self.processor.change_mode(is_training=True)
        bar = tqdm(total=total, initial=pos.step, desc=f"train {ctx.job.id}", file=sys.stderr,
                   disable=not ctx.is_main_process, dynamic_ncols=True)
        try:
            while pos.step < total:  # total_steps ends the last epoch (or is engine.max_steps)
                order = self.epoch_order(pos.epoch)
                micro, step_loss, step_records = 0, 0.0, 0
                while pos.batch < nb and pos.step < total:
                    chunk = order[pos.batch * self.global_batch_size:(pos.batch + 1) * self.global_batch_size]
                    idx = chunk[self.rank * cfg.batch_size:(self.rank + 1) * cfg.batch_size]  # this rank's slice
                    real = len(idx)
                    # a short last batch can leave this rank no record: it runs one of the batch with its loss
                    # times 0 (DDP needs every rank's backward), counted nowhere
                    self._zero_loss_now = not real
                    batch = self.train_collator([self.train_dataset[i] for i in idx or chunk[:1]])
                    pos.batch += 1
                    last_in_epoch = pos.batch == nb
                    try:
                        loss = self._backward_one(batch, pos.batch, use_amp, amp_dtype,
                                                  is_last_micro=(micro + 1) % accum == 0 or last_in_epoch)
                    finally:
                        self._zero_loss_now = False
                    micro += 1
                    if real:
                        step_loss += float(loss.detach().float().cpu())
                    step_records += real
                    if micro < accum and not last_in_epoch:
                        continue
                    if micro < accum:
                        self._renormalize_partial_accumulation(micro)
                    self._optimizer_step()
                    micro = 0
                    pos.step += 1
                    step_loss, step_records = self._global_sum(step_loss, step_records)
                    pos.loss_sum += step_loss
                    pos.records_seen += step_records
                    window_loss += step_loss
                    window_records += step_records
                    step_loss, step_records = 0.0, 0
                    if last_in_epoch:
                        pos.epoch, pos.batch = pos.epoch + 1, 0
                    epoch_f = self.epoch_float(pos)
                    bar.update(1)
                    reporter.progress(pos.step, total, epoch_f, force=pos.step == total)

                    step_metrics: dict[str, Any] = {}
                    if pos.step % spec.engine.logging_steps == 0 or pos.step == total:
                        self._flush_nonfinite()
                        step_metrics = self._log_step(pos, epoch_f, window_loss / max(window_records, 1), bar)
                        window_loss, window_records = 0.0, 0
                    eval_now = bool(self.data.eval) and (
                        (eval_steps and pos.step % eval_steps == 0)
                        or (not eval_steps and last_in_epoch) or pos.step == total)
                    if eval_now:
                        pos.last_eval = {"step": pos.step, **self.evaluate()}
                        self._log_eval(pos, epoch_f, pos.last_eval, bar)
                    save_now = (save_steps and pos.step % save_steps == 0) or (not save_steps and last_in_epoch) \
                        or pos.step == total
                    if save_now:
                        last_manifest = self.save_checkpoint(pos, self._checkpoint_metrics(pos, step_metrics))
                        saved_step = pos.step
                    if pos.step >= total:
                        break
                    reason = ctx.control.check()
                    if reason is not None:
                        if saved_step != pos.step:
                            last_manifest = self.save_checkpoint(pos, self._checkpoint_metrics(pos, step_metrics))
                            saved_step = pos.step
                        reporter.progress(pos.step, total, epoch_f, force=True)  # status.json: where it stopped
                        word = "stop requested" if reason == StopReason.STOP else "preempted (signal)"
                        reporter.log(f"{word} at step {pos.step}: checkpoint {getattr(last_manifest, 'uuid', None)}")
                        return (Outcome.STOPPED if reason == StopReason.STOP else Outcome.PREEMPTED), pos, last_manifest
                    if last_in_epoch:
                        break  # the next epoch has its own order
        finally:
            bar.close()
            pos.runtime_s += time.monotonic() - self._t0
        return Outcome.COMPLETE, pos, last_manifest

    def _flush_nonfinite(self) -> None:
        try:
            self._flush_delayed_counters()
        except FloatingPointError as err:
            raise FelixError(f"training diverged: {err} (loss is NaN/inf). Lower `learning_rate` "
                             f"(now {self.ctx.spec.learning_rate}) or raise `engine.warmup_ratio`.") from err

    def _log_step(self, pos: Position, epoch_f: float, loss: float, bar) -> dict:
        lrs = self.scheduler.get_last_lr()
        grad = self._last_grad_norm
        metrics = {"loss": loss, "learning_rate": lrs[-1],
                   "grad_norm": float(grad) if grad is not None else None}
        if len(lrs) > 1:
            metrics["encoder_learning_rate"] = lrs[0]
        self.ctx.reporter.log_metrics(pos.step, metrics, epoch=epoch_f)
        self.ctx.reporter.log(f"step {pos.step}/{self.total_steps} epoch {epoch_f:.2f} loss {loss:.4f} "
                              f"lr {lrs[-1]:.3g} grad_norm {metrics['grad_norm'] or 0:.3f}")
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[-1]:.2e}")
        return metrics

    def _log_eval(self, pos: Position, epoch_f: float, metrics: dict, bar) -> None:
        logged = {k: v for k, v in metrics.items() if k != "step"}
        self.ctx.reporter.log_metrics(pos.step, logged, epoch=epoch_f)
        per_label = ", ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in logged.items() if k.startswith("eval_f1/"))
        self.ctx.reporter.log(f"eval step {pos.step}: loss {logged.get('eval_loss', float('nan')):.4f} "
                              f"P {logged.get('eval_precision', 0):.3f} R {logged.get('eval_recall', 0):.3f} "
                              f"F1 {logged.get('eval_f1', 0):.3f}" + (f" ({per_label})" if per_label else ""))

    def _checkpoint_metrics(self, pos: Position, step_metrics: dict) -> dict:
        metrics = {k: v for k, v in step_metrics.items() if v is not None}
        if pos.last_eval.get("step") == pos.step:
            metrics.update({k: v for k, v in pos.last_eval.items() if k != "step"})
        metrics["train_loss"] = pos.loss_sum / max(pos.records_seen, 1)
        return metrics


# =============================================================================
# Setup, export, run
# =============================================================================

def _training_config(ctx: TrainContext) -> TrainingConfig:
    spec = ctx.spec
    eng = spec.engine
    lora = spec.training_type == TrainingType.LORA
    fp16, bf16 = _precision(eng.precision)
    return TrainingConfig(
        output_dir=str(ctx.job.work_dir / "gliner2"), experiment_name=ctx.job.id,
        num_epochs=spec.num_epochs, max_steps=eng.max_steps or -1,
        batch_size=eng.batch_size, eval_batch_size=max(eng.batch_size, 8),
        gradient_accumulation_steps=eng.gradient_accumulation_steps,
        task_lr=spec.learning_rate,
        encoder_lr=eng.encoder_learning_rate or spec.learning_rate / (LORA_ENCODER_LR_DIVISOR if lora else FULL_ENCODER_LR_DIVISOR),
        weight_decay=eng.weight_decay, max_grad_norm=eng.max_grad_norm,
        scheduler_type="linear", warmup_ratio=eng.warmup_ratio,
        fp16=fp16, bf16=bf16, eval_strategy="no", save_best=False, save_total_limit=0,
        logging_steps=eng.logging_steps, num_workers=0, pin_memory=False, seed=eng.seed, deterministic=True,
        validate_data=False, max_len=None, gradient_checkpointing=eng.gradient_checkpointing,
        # DDP: a batch without relations (say) leaves the relation head unused, and not the same one every step
        ddp_find_unused_parameters=True, ddp_static_graph=False,
        # TF32 matmuls on GPUs; exact fp32 elsewhere (this setting is process-wide in torch)
        float32_matmul_precision="high" if torch.cuda.is_available() else "highest",
        use_lora=lora, lora_r=eng.lora.r, lora_alpha=float(eng.lora.alpha or 2 * eng.lora.r),
        lora_dropout=eng.lora.dropout, lora_target_modules=lora_targets(eng.lora.target_modules) if lora else
        list(GLINER2_DEFAULT_TARGETS),
    )


def _initial_weights(ctx: TrainContext) -> tuple[Path, Path | None, str]:
    """(folder to load the GLiNER2 model from, adapter folder or None, a description) for this run.

    Resume (this job's checkpoint) wins over continue (a checkpoint UUID as base_model),
    which wins over the catalog base.
    """
    lora = ctx.spec.training_type == TrainingType.LORA
    source = None
    if ctx.resume_from is not None:
        source, what = ctx.checkpoints.path(ctx.resume_from), f"resumed checkpoint {ctx.resume_from.uuid}"
    elif ctx.model.init_checkpoint is not None:
        uuid = ctx.model.init_manifest.uuid if ctx.model.init_manifest else Path(ctx.model.init_checkpoint).name
        source, what = Path(ctx.model.init_checkpoint), f"checkpoint {uuid}"
    if source is None:
        return ctx.model.path, None, f"base {ctx.model.entry.id}"
    want = source / (ADAPTER_DIR if lora else MODEL_DIR)
    if not want.is_dir():
        raise CheckpointNotFound(
            f"{what} at {source} has no `{want.name}/` folder; it was not written by a GLiNER2 "
            f"{ctx.spec.training_type.value} run. Use a checkpoint of a `training_type: "
            f"{ctx.spec.training_type.value}` GLiNER2 job.")
    if lora:
        return ctx.model.path, want, what
    return want, None, what


def _export(trainer: FelixGLiNER2Trainer, ctx: TrainContext, info: dict) -> None:
    """Write the final model into `job/model/` atomically (temp folder in the job dir, then rename)."""
    job = ctx.job
    tmp = job.root / f".model.tmp-{uuidlib.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        if trainer.config.use_lora:
            trainer.unwrapped.save_pretrained(str(tmp / ADAPTER_DIR))
            merged = trainer.unwrapped.merge_and_unload()
            merged._lora_layers = {}
            merged.save_pretrained(str(tmp / "merged"))
            layout = {
                "adapter": {"path": f"{ADAPTER_DIR}/", "format": "peft-lora",
                            "load": f"PeftModel.from_pretrained(GLiNER2.from_pretrained(<base>), 'model/{ADAPTER_DIR}')"},
                "merged": {"path": "merged/", "format": "gliner2",
                           "load": "GLiNER2.from_pretrained('model/merged')"},
            }
        else:
            trainer.base_model.save_pretrained(str(tmp))
            layout = {"model": {"path": "./", "format": "gliner2", "load": "GLiNER2.from_pretrained('model')"}}
        readme = {
            "family": "gliner2", "library": "gliner2", "training_type": ctx.spec.training_type.value,
            "base_model": ctx.model.entry.id, "base_model_path": str(ctx.model.path),
            "job_id": job.id, "created_at": utcnow(), "files": layout, **info,
        }
        atomic_write_json(tmp / "felix_model.json", readme)
        old = None
        if job.model_dir.exists():
            old = job.root / f".model.old-{uuidlib.uuid4().hex[:8]}"
            os.replace(job.model_dir, old)
        os.replace(tmp, job.model_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_weights_from(trainer: FelixGLiNER2Trainer, folder: Path) -> None:
    """Put a checkpoint's weights (adapter or full model) into the live model."""
    from safetensors.torch import load_file

    if trainer.config.use_lora:
        from peft import set_peft_model_state_dict

        state = load_file(str(folder / ADAPTER_DIR / "adapter_model.safetensors"))
        set_peft_model_state_dict(trainer.unwrapped, state)
    else:
        state = load_file(str(folder / MODEL_DIR / "model.safetensors"))
        trainer.base_model.load_state_dict(state)


def check_launch(spec) -> None:
    """SpecError when this process is one rank of an FSDP or DeepSpeed launch: GLiNER2 trains with DDP only.

    `accelerate launch` marks those launches in the environment of every rank (`ACCELERATE_USE_FSDP`,
    `ACCELERATE_USE_DEEPSPEED`); felix's own loop wraps the model in DDP, and neither sharding would apply.
    """
    true = ("1", "true", "yes")
    kind = ("FSDP" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in true
            else "DeepSpeed" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in true else None)
    if kind is None:
        return
    named = spec.engine.distributed.config or os.environ.get("FELIX_ACCELERATE_CONFIG") or "an accelerate config"
    raise SpecError([ErrorItem(
        ("engine", "distributed", "config"),
        f"GLiNER2 jobs train with DDP only, and this launch is {kind} ({named}); set "
        "`engine.distributed.config: ddp` (or `multi-node` across machines), or leave it out, to train one model "
        "replica per process (GLiNER2 models fit on one GPU)", "distributed_not_supported")])


def run(ctx: TrainContext) -> TrainResult:
    """Fine-tune a GLiNER2 model as `ctx.spec` says; see the module docstring."""
    check_launch(ctx.spec)
    spec, reporter = ctx.spec, ctx.reporter
    lora = spec.training_type == TrainingType.LORA
    load_from, adapter_from, what = _initial_weights(ctx)
    model = load_gliner2(load_from)
    add_entity_count_loss(model)
    reporter.log(f"gliner2 {spec.training_type.value}: weights from {what}")

    data = prepare_data(ctx, model.processor.word_splitter)
    for change in set_label_sampling(model, data.train):
        reporter.log(f"gliner2 label sampling: {change}")
    for name, c in data.per_dataset.items():
        reporter.log(f"dataset {name}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if data.dropped or data.truncated:
        reporter.log(f"length policy {spec.engine.length_policy.value}: {data.dropped} record(s) dropped, "
                     f"{data.truncated} truncated to {spec.engine.max_length} words")
    if ctx.is_main_process:
        work = ctx.job.work_dir / "gliner2"
        _write_jsonl(work / "train.jsonl", data.train)
        _write_jsonl(work / "eval.jsonl", data.eval)

    config = _training_config(ctx)
    trainer = FelixGLiNER2Trainer(model, config, ctx=ctx, data=data, adapter_from=adapter_from)
    trainer.setup_optimization()
    if adapter_from is not None:
        peft_cfg = trainer.unwrapped.peft_config["default"]
        if (peft_cfg.r, float(peft_cfg.lora_alpha)) != (config.lora_r, config.lora_alpha):
            reporter.log(f"LoRA shape comes from the checkpoint (r={peft_cfg.r}, alpha={peft_cfg.lora_alpha}); "
                         f"engine.lora (r={config.lora_r}, alpha={config.lora_alpha:g}) applies to new adapters only",
                         level="WARN")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in trainer.model.parameters())
    reporter.log(f"{len(data.train)} train / {len(data.eval)} eval records; batch {config.batch_size} × accumulation "
                 f"{config.gradient_accumulation_steps}" + (f" × {trainer.world} processes" if trainer.world > 1 else "")
                 + f"; {trainer.total_steps} steps over {trainer.num_epochs} epoch(s); "
                 f"LR task {config.task_lr:g} encoder{' LoRA' if lora else ''} {config.encoder_lr:g}"
                 + (f"; LoRA on {len(trainer.lora_layers)} layers, task heads trained in full: {', '.join(trainer.full_heads)}"
                    if lora and trainer.full_heads else "")
                 + f"; {trainable:,} of {total_params:,} parameters trainable")

    pos = Position()
    if ctx.resume_from is not None:
        pos = trainer.restore(ctx.checkpoints.path(ctx.resume_from))
        reporter.log(f"resumed at step {pos.step} (epoch {pos.epoch}, batch {pos.batch})")

    outcome, pos, last_manifest = trainer.fit(pos, resumed_from=ctx.resume_from.uuid if ctx.resume_from else None)
    if outcome != Outcome.COMPLETE:
        return TrainResult(outcome, metrics={"step": pos.step}, last_checkpoint=last_manifest)

    # -- finish: pick the final weights, export, report ---------------------------------
    last = last_manifest or ctx.checkpoints.latest()
    last_eval = {k: v for k, v in pos.last_eval.items() if k != "step"}
    chosen, chosen_eval = last, last_eval
    best = ctx.checkpoints.best()
    if best is not None and last is not None and best.uuid != last.uuid:
        if best.metrics.get("eval_f1", float("-inf")) > last_eval.get("eval_f1", float("-inf")):
            _load_weights_from(trainer, ctx.checkpoints.path(best))
            chosen = best
            chosen_eval = {k: v for k, v in best.metrics.items() if k.startswith("eval_")}
            reporter.log(f"final model: best checkpoint {best.uuid} (step {best.step}, eval_f1 "
                         f"{best.metrics['eval_f1']:.4f} > last {last_eval.get('eval_f1', float('nan')):.4f})")
    from_best = chosen is not last
    metrics: dict[str, Any] = {
        "train_loss": pos.loss_sum / max(pos.records_seen, 1),
        **{k: v for k, v in chosen_eval.items() if k.startswith("eval_") and not k.startswith(("eval_precision/", "eval_recall/"))},
        "train_runtime_s": round(pos.runtime_s, 3),
        "train_samples_per_second": round(pos.records_seen / pos.runtime_s, 3) if pos.runtime_s > 0 else None,
        "num_train_records": len(data.train), "num_eval_records": len(data.eval),
        "global_step": pos.step, "epoch": trainer.epoch_float(pos),
        "best_checkpoint": best.uuid if best else None,
        "last_checkpoint": last.uuid if last else None,
        "final_model_from": "best_checkpoint" if from_best else "last_step",
        "final_model_checkpoint": chosen.uuid if chosen else None,
        "final_model_step": chosen.step if chosen else pos.step,
    }
    if ctx.is_main_process:
        _export(trainer, ctx, {"checkpoint": metrics["final_model_checkpoint"], "step": metrics["final_model_step"],
                               "selected": metrics["final_model_from"],
                               "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    if "eval_f1" in metrics:
        reporter.log(f"final model (step {metrics['final_model_step']}, {metrics['final_model_from'].replace('_', ' ')}): "
                     f"eval F1 {metrics['eval_f1']:.3f} (P {metrics.get('eval_precision', 0):.3f} "
                     f"R {metrics.get('eval_recall', 0):.3f}) on {len(data.eval)} eval records; in {ctx.job.model_dir}")
    return TrainResult(Outcome.COMPLETE, metrics=metrics, last_checkpoint=last)
