"""GLiNER2 fine-tuning (LoRA or full) over gliner2's own `ExtractorTrainer`; `run(ctx)` is the entry point.

The package is shaped like gliner2's `gliner2/training/`, one concern per module:

- `recipe.py`: `run(ctx)`, the recipe the dispatch table calls for `(gliner2, sft)`;
- `config.py`: the spec mapped onto gliner2's `TrainingConfig` (LRs, LoRA targets, precision),
  the checkpoint file names, `check_launch` (DDP only);
- `data.py`: records (through `felix_train.jsonl`), label lists, the length policy and the
  length-grouped epoch order (with `engine.entity_free_share`'s sample of the entity-free records);
- `augment.py`: mention replacement (`engine.mention_replacement`), drawn anew each epoch;
- `split.py`: the eval split (unseen-mention by default, else random) and the training mentions;
- `labels.py`: label names as the model is asked (verbalised) and their descriptions, both ways;
- `model.py`: loading, the entity count loss gliner2 2.1.0 skips, label sampling, the LoRA plan;
- `loss.py`: the span loss of `engine.span_loss` (positive weight, focal gamma, negative drop);
- `trainer.py`: `FelixGLiNER2Trainer`, gliner2's trainer set up for a job (work dir, reporter,
  LoRA with fully trained heads, fused AdamW, DDP on CPUs and GPUs, the schedule);
- `loop.py`: the step loop with its cadence (log, eval, save) and control (stop, preempt);
- `state.py`: what a checkpoint holds beyond the weights and how a run resumes, exactly, on the
  same or another number of processes;
- `eval.py`: eval loss and exact-match P/R/F1 of the model's own extraction (seen/unseen mentions apart);
- `calibrate.py`: decision thresholds (global and per label) chosen on the eval split;
- `export.py`: the final weights chosen (best checkpoint or last step), the thresholds, the LoRA
  merge, `job/model/`.

Heavy imports (torch, gliner2, peft) happen in the modules that use them, and the names below load
their module on first use, so importing this package alone loads neither; the dispatch table
imports `run` only when a GLiNER2 job runs.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this package that defines it
_EXPORTS = {
    "run": "recipe",
    "check_launch": "config", "training_config": "config", "lora_targets": "config",
    "GLINER2_DEFAULT_TARGETS": "config",
    "PreparedData": "data", "prepare_data": "data", "entity_labels": "data", "fill_entity_labels": "data",
    "load_gliner2": "model", "add_entity_count_loss": "model", "set_label_sampling": "model", "lora_plan": "model",
    "SpanLoss": "loss", "set_span_loss": "loss",
    "FelixGLiNER2Trainer": "trainer",
    "Position": "state",
    "extraction_metrics": "eval",
    "split_eval": "split", "verbalize_label": "labels", "label_prompts": "labels",
    "choose_thresholds": "calibrate", "calibrate": "calibrate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
