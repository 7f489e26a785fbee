"""The GLiNER2 recipe: `run(ctx)`, the trainer the dispatch table calls for `(gliner2, sft)`.

It reads top to bottom: the initial weights (`state.initial_weights`: resume, continue or the
catalog base) → `model.load_gliner2` with the entity count loss and `loss.set_span_loss` → `data.prepare_data` and the
label sampling → `FelixGLiNER2Trainer` (+ `state.restore` when resuming) → `loop.fit` →
`export.finish` (the final weights chosen and written to `job/model/`). A stopped or preempted
run returns at `loop.fit` with its last checkpoint.
"""

from __future__ import annotations

from felix_train.catalog import TrainingType
from felix_train.trainers.context import Outcome, TrainContext, TrainResult
from felix_train.trainers.gliner2.config import check_launch, training_config
from felix_train.trainers.gliner2.data import prepare_data, write_jsonl
from felix_train.trainers.gliner2.export import finish
from felix_train.trainers.gliner2.loop import fit
from felix_train.trainers.gliner2.loss import set_span_loss
from felix_train.trainers.gliner2.model import add_entity_count_loss, load_gliner2, set_label_sampling
from felix_train.trainers.gliner2.state import Position, initial_weights, restore
from felix_train.trainers.gliner2.trainer import FelixGLiNER2Trainer


def run(ctx: TrainContext) -> TrainResult:
    """Fine-tune a GLiNER2 model as `ctx.spec` says; see the module docstring."""
    check_launch(ctx.spec)
    spec, reporter = ctx.spec, ctx.reporter
    lora = spec.training_type == TrainingType.LORA
    load_from, adapter_from, what = initial_weights(ctx)
    model = load_gliner2(load_from)
    add_entity_count_loss(model)
    reporter.log(f"gliner2 {spec.training_type.value}: weights from {what}")
    if set_span_loss(model, spec.engine.span_loss):
        reporter.log(f"span loss (engine.span_loss): {spec.engine.span_loss.describe()}")

    data = prepare_data(ctx, model.processor.word_splitter)
    for change in set_label_sampling(model, data.train):
        reporter.log(f"gliner2 label sampling: {change}")
    for name, c in data.per_dataset.items():
        reporter.log(f"dataset {name}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if data.eval:
        reporter.log(f"eval split {data.eval_split}: {data.split_note}")
    reporter.log(f"entity decoding: {data.decoding} (engine.ner_decoding: {spec.engine.ner_decoding})")
    renamed = {k: v for k, v in data.label_prompts.items() if k != v}
    if renamed or data.label_descriptions:
        reporter.log("labels asked as " + (", ".join(f"{k!r} -> {v!r}" for k, v in renamed.items()) or "they are")
                     + (f"; described: {', '.join(data.label_descriptions)}" if data.label_descriptions else ""))
    if data.dropped or data.truncated:
        reporter.log(f"length policy {spec.engine.length_policy.value}: {data.dropped} record(s) dropped, "
                     f"{data.truncated} truncated to {spec.engine.max_length} words")
        reporter.warn_lengths(truncated=data.truncated, dropped=data.dropped, max_length=spec.engine.max_length,
                              policy=spec.engine.length_policy.value)
    if ctx.is_main_process:
        work = ctx.job.work_dir / "gliner2"
        write_jsonl(work / "train.jsonl", data.train)
        write_jsonl(work / "eval.jsonl", data.eval)

    config = training_config(ctx)
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
    left_out = len(data.train) - trainer.epoch_size  # entity-free records beyond engine.entity_free_share
    reporter.log(f"{len(data.train)} train / {len(data.eval)} eval records"
                 + (f" ({trainer.epoch_size} per epoch: {len(trainer.entity_free) - left_out} of the "
                    f"{len(trainer.entity_free)} entity-free, engine.entity_free_share "
                    f"{spec.engine.entity_free_share:g})" if left_out else "")
                 + (f"; mention replacement {spec.engine.mention_replacement:g}" if spec.engine.mention_replacement else "")
                 + f"; batch {config.batch_size} × accumulation "
                 f"{config.gradient_accumulation_steps}" + (f" × {trainer.world} processes" if trainer.world > 1 else "")
                 + f"; {trainer.total_steps} steps over {trainer.num_epochs} epoch(s); "
                 f"LR task {config.task_lr:g} encoder{' LoRA' if lora else ''} {config.encoder_lr:g}"
                 + (f"; LoRA on {len(trainer.lora_layers)} layers, task heads trained in full: {', '.join(trainer.full_heads)}"
                    if lora and trainer.full_heads else "")
                 + f"; {trainable:,} of {total_params:,} parameters trainable")

    pos = Position()
    if ctx.resume_from is not None:
        pos = restore(trainer, ctx.checkpoints.path(ctx.resume_from))
        reporter.log(f"resumed at step {pos.step} (epoch {pos.epoch}, batch {pos.batch})")

    outcome, pos, last_manifest = fit(trainer, pos, resumed_from=ctx.resume_from.uuid if ctx.resume_from else None)
    if outcome != Outcome.COMPLETE:
        return TrainResult(outcome, metrics={"step": pos.step}, last_checkpoint=last_manifest)
    return finish(trainer, ctx, data, pos, last_manifest)
