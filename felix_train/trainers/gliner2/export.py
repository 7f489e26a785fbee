"""The end of a GLiNER2 run: the final weights chosen, the LoRA merge, the model folder `job/model/`.

Final model choice (`finish`): when an eval set exists, the model written to `job/model/` is the
best checkpoint by `eval_f1` if that is strictly better than the last step's, else the last
step's weights; `felix_model.json` and the job metrics (`final_model_from`, `final_model_step`)
say which. With those weights the decision thresholds are chosen on the eval split
(`calibrate.py`, under the job's entity decoding) and saved in `felix_model.json` (`thresholds`,
`thresholds_chosen`), beside the label names the model is asked (`label_prompts`, `label_verbalize`,
`label_descriptions`), the entity decoding (`decoding`: `flat` or `nested`, also in the job's metrics)
and the eval split (`eval_split`).

The folder (`export_model`), loadable with no felix code: LoRA writes the PEFT adapter under
`adapter/` and always the merged model under `merged/` (whatever `engine.export.merged` says);
full training writes a gliner2 folder `GLiNER2.from_pretrained` loads. It is built in a temp
folder of the job and swapped in whole (`felix_train.jobs.replace_dir`); rank 0 alone writes it.
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from pathlib import Path
from typing import Any

from felix_train.jobs import atomic_write_json, replace_dir, utcnow
from felix_train.trainers.context import Outcome, TrainContext, TrainResult
from felix_train.trainers.gliner2.config import ADAPTER_DIR, MODEL_DIR
from felix_train.trainers.gliner2.data import PreparedData
from felix_train.trainers.gliner2.state import Position


def export_model(trainer, ctx: TrainContext, info: dict) -> None:
    """Write the final model into `job/model/` atomically (temp folder in the job dir, then swapped in)."""
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
        replace_dir(tmp, job.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_weights_from(trainer, folder: Path) -> None:
    """Put a checkpoint's weights (adapter or full model) into the live model."""
    from safetensors.torch import load_file

    if trainer.config.use_lora:
        from peft import set_peft_model_state_dict

        state = load_file(str(folder / ADAPTER_DIR / "adapter_model.safetensors"))
        set_peft_model_state_dict(trainer.unwrapped, state)
    else:
        state = load_file(str(folder / MODEL_DIR / "model.safetensors"))
        trainer.base_model.load_state_dict(state)


def _calibrate(trainer, data: PreparedData):
    """Decision thresholds chosen on the eval records with the final weights (`calibrate.py`); None without any."""
    if not data.eval:
        return None
    from felix_train.trainers.gliner2.calibrate import calibrate

    model = trainer.base_model
    try:
        return calibrate(model, data.eval, batch_size=trainer.config.eval_batch_size, max_len=data.collator_max_len,
                         label_names=data.label_names, decoding=data.decoding)
    finally:
        trainer.processor.change_mode(is_training=True)


def finish(trainer, ctx: TrainContext, data: PreparedData, pos: Position, last_manifest: Any) -> TrainResult:
    """Pick the final weights (best checkpoint or last step), export them, report the job's metrics."""
    reporter = ctx.reporter
    last = last_manifest or ctx.checkpoints.latest()
    last_eval = {k: v for k, v in pos.last_eval.items() if k != "step"}
    chosen, chosen_eval = last, last_eval
    best = ctx.checkpoints.best()
    if best is not None and last is not None and best.uuid != last.uuid:
        if best.metrics.get("eval_f1", float("-inf")) > last_eval.get("eval_f1", float("-inf")):
            load_weights_from(trainer, ctx.checkpoints.path(best))
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
        "trained_tokens": int(pos.records_seen),  # GLiNER2 counts samples (engine.max_tokens too)
    }
    if pos.stopped_by:
        metrics["stopped_by"] = pos.stopped_by
    if data.eval:
        metrics["eval_split"] = data.eval_split
    metrics["decoding"] = data.decoding
    info: dict[str, Any] = {"label_prompts": data.label_prompts, "label_verbalize": ctx.spec.engine.label_verbalize,
                            "label_descriptions": data.label_descriptions, "decoding": data.decoding}
    if ctx.is_main_process:
        calibration = _calibrate(trainer, data)
        if calibration is not None:
            metrics.update({"eval_f1_at_0.5": calibration.f1_at_half, "eval_f1_calibrated": calibration.f1_calibrated,
                            "threshold": calibration.default,
                            **{f"threshold/{k}": v for k, v in calibration.per_label.items()}})
            info.update(thresholds=calibration.thresholds(), thresholds_chosen=calibration.chosen(len(data.eval)))
            reporter.log(f"thresholds chosen on the eval split: {calibration.thresholds()}; entity micro-F1 "
                         f"{calibration.f1_at_half:.3f} at 0.5 -> {calibration.f1_calibrated:.3f} calibrated")
        export_model(trainer, ctx, {"checkpoint": metrics["final_model_checkpoint"], "step": metrics["final_model_step"],
                                    "selected": metrics["final_model_from"], "eval_split": metrics.get("eval_split"),
                                    **info,
                                    "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    if "eval_f1" in metrics:
        reporter.log(f"final model (step {metrics['final_model_step']}, {metrics['final_model_from'].replace('_', ' ')}): "
                     f"eval F1 {metrics['eval_f1']:.3f} (P {metrics.get('eval_precision', 0):.3f} "
                     f"R {metrics.get('eval_recall', 0):.3f}) on {len(data.eval)} eval records; in {ctx.job.model_dir}")
    return TrainResult(Outcome.COMPLETE, metrics=metrics, last_checkpoint=last)
