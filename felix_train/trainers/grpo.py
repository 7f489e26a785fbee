"""LoRA GRPO of decoder LLMs with TRL's `GRPOTrainer` (`training_algorithm: grpo`).

Reads top to bottom like a recipe:

1. `check_params`: what the spec cannot know before a worker runs it (vLLM installed, a GPU for it, whether
   `rl_config.use_vllm` or `engine.generation: vllm` asks for it), refused up front as a `SpecError` naming the field (exit 2, nothing trained).
2. `_setup_data`: every dataset's `prompt` (text or conversational) plus the columns the rewards read (TRL
   passes every column besides `prompt` to the reward functions as keyword lists); prompts longer than
   `engine.max_length` tokens follow `engine.length_policy` (`error` lists them; `drop` and `truncate` leave
   them out: a cut prompt is another task). Eval prompts: `engine.eval.dataset` or a seeded split. Text prompts
   are asked as one user message through the model's chat template (`rl_config.chat_template`, default true:
   an instruct model answers a bare text prompt by continuing it), as `felix-train eval` asks them.
3. Rewards: `felix_train.rewards.build_reward_funcs(rl_config.reward_type)`, weighted by TRL's
   `reward_weights`; TRL logs each one's mean and std as `rewards/<name>/mean|std`.
4. `GRPOTrainer` (`grpo_timing.TimedGRPOTrainer`) with `config_kwargs`: the shared TrainingArguments plus every
   `rl_config` key, generating with transformers (batched, with the KV cache) or, for `engine.generation: vllm`
   (or `use_vllm`), TRL's colocated vLLM engine; hooked by `FelixCallback`: the reward, its std,
   `frac_reward_zero_std`, `kl` (beta > 0), completion lengths and the clipped ratio reach metrics.jsonl, with
   the time split (generation, reward, training seconds, generated tokens/s) and tokens/s and MFU of the
   training passes; `ZeroStdWatch` warns when most groups give no gradient for several logged steps.
   With beta > 0 the reference is the base with the adapter disabled (or a frozen copy of a continued adapter).
5. The adapter, tokenizer and chat template into `model/`; final metrics: the last logging window's reward
   (also per reward function), the same averaged over the whole job, completion length, runtime, the run's
   time split, tokens/s and MFU.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from typing import Any

from datasets import Dataset
from trl import GRPOConfig

from felix_train.errors import DatasetError, ErrorItem, SpecError
from felix_train.rewards import build_reward_funcs, parse_reward_type
from felix_train.rl_config import GRPOParams, text_prompts_as_chat
from felix_train.spec import GenerationBackend, LengthPolicy
from felix_train.trainers.context import ResolvedDataset, TrainContext, TrainResult
from felix_train.trainers.fast_dropout import use_fast_cpu_dropout
from felix_train.trainers.grpo_timing import TimedGRPOTrainer, TimeSplit, ZeroStdWatch, timed_rewards
from felix_train.trainers.hf_bridge import (
    FelixCallback, hf_output_dir, run_train_loss, tracker_callbacks, train, training_kwargs,
)
from felix_train.trainers.lm_common import (
    complete,
    eval_split,
    final_eval,
    length_error,
    load_tokenizer,
    log_trainable,
    logged_mean,
    numeric,
    read_records,
    setup_lora_model,
    stopped_result,
    to_dataset,
)
from felix_train.trainers.lm_perf import configure_threads, mean_length, perf_metrics, setup_throughput

WINDOW_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length",
               "completions/mean_terminated_length", "completions/clipped_ratio", "clip_ratio/region_mean")
"""TRL's per-window GRPO metrics kept in the final metrics (as logged in the last training window)."""
PROMPTS_MEASURED = 256
"""Prompts whose mean length (plus `max_completion_length`) is the sequence length MFU's attention term counts."""
OVER_TRAINING_KEYS = ("reward", "completions/mean_length")
"""Also averaged over the whole job, as `<key>_over_training` (every reward function's mean too)."""


# -- 1. what only the worker can check -----------------------------------------------------------------------------

def check_params(rl: GRPOParams, device: str,
                 generation: GenerationBackend = GenerationBackend.TRANSFORMERS) -> list[ErrorItem]:
    """Problems of a valid `GRPOParams` (and `engine.generation`) on this worker; every one as an `ErrorItem`."""
    errors: list[ErrorItem] = []
    asked = [(("rl_config", "use_vllm"), "`use_vllm: true`", "set `use_vllm: false`")] if rl.use_vllm else []
    if generation == GenerationBackend.VLLM:
        asked.append((("engine", "generation"), "`engine.generation: vllm`", "set `engine.generation: transformers`"))
    for loc, what, fix in asked:
        if importlib.util.find_spec("vllm") is None:
            errors.append(ErrorItem(loc, f"{what} but vLLM is not installed on this worker; install it (`pip install "
                                    f"vllm`) or {fix} to generate with transformers", "vllm_not_installed"))
        elif device != "cuda":
            errors.append(ErrorItem(loc, f"{what} needs a GPU, but this job runs on {device}; {fix} to generate "
                                    "with transformers", "vllm_needs_gpu"))
    return errors


def uses_vllm(ctx: TrainContext, rl: GRPOParams) -> bool:
    """Whether completions come from TRL's colocated vLLM engine (`engine.generation: vllm` or `rl_config.use_vllm`)."""
    return rl.use_vllm or ctx.spec.engine.generation == GenerationBackend.VLLM


# -- 2. data -------------------------------------------------------------------------------------------------------

def _rows(ds: ResolvedDataset) -> tuple[list[dict], list[str]]:
    """(rows with every column of the dataset plus `source` and `line`, the dataset's columns besides `prompt`)."""
    records = read_records(ds)
    columns = list(dict.fromkeys(k for _, r in records for k in r if k != "prompt"))
    rows = [{"prompt": r["prompt"], **{c: r.get(c) for c in columns}, "source": ds.name, "line": line}
            for line, r in records]
    return rows, columns


def _prompt_length(tokenizer, prompt) -> int:
    if isinstance(prompt, list):
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    return len(tokenizer(prompt)["input_ids"])


def _apply_length_policy(ctx: TrainContext, data: Dataset, tokenizer, *, what: str,
                         dropped: dict[str, int]) -> Dataset:
    """`engine.length_policy` on prompts longer than `engine.max_length` tokens.

    Raises:
        DatasetError: policy `error` and some prompts are too long (every one listed: dataset, line, length).
    """
    engine = ctx.spec.engine
    limit = engine.max_length
    lengths = [_prompt_length(tokenizer, p) for p in data["prompt"]]
    over = [i for i, n in enumerate(lengths) if n > limit]
    if not over:
        return data
    sources, lines = data["source"], data["line"]
    if engine.length_policy == LengthPolicy.ERROR:
        errors = [ErrorItem(("datasets", sources[i], lines[i]),
                            f"{sources[i]} line {lines[i]}: a {lengths[i]}-token prompt > engine.max_length {limit}",
                            "record_too_long") for i in over]
        raise length_error(
            f"{len(errors)} {what} prompt(s) are longer than engine.max_length ({limit} tokens)", errors,
            "Raise `engine.max_length`, shorten or remove these prompts, or set `engine.length_policy: drop` to "
            "leave them out (GRPO never cuts a prompt: `truncate` drops them too).")
    for i in over:
        dropped[sources[i]] = dropped.get(sources[i], 0) + 1
    gone = set(over)
    return data.select([i for i in range(len(data)) if i not in gone])


def _setup_data(ctx: TrainContext, tokenizer) -> tuple[Dataset, Dataset | None, dict[str, int]]:
    """(train, eval or None, prompts dropped per dataset): Datasets with `prompt`, the reward columns, source, line."""
    engine = ctx.spec.engine
    parts, column_sets = [], []
    for ds in ctx.train_data:
        rows, columns = _rows(ds)
        parts.append(rows)
        column_sets.append(columns)
    # only columns every dataset has can be read by the rewards (the spec validator checked they do)
    shared = [c for c in column_sets[0] if all(c in cols for cols in column_sets)]
    keep = ["prompt", *shared, "source", "line"]
    all_rows = [{k: row[k] for k in keep} for rows in parts for row in rows]
    eval_rows: list[dict] = []
    if ctx.eval_data is not None:
        rows, columns = _rows(ctx.eval_data)
        missing = [c for c in shared if c not in columns]
        if missing:
            raise DatasetError(f"eval dataset {ctx.eval_data.name!r} lacks column(s) {', '.join(missing)} that the "
                               "training data has and the rewards may read; add them to the eval data")
        eval_rows = [{k: row[k] for k in keep} for row in rows]
    text = [r for r in all_rows + eval_rows if not isinstance(r["prompt"], list)]
    if text and text_prompts_as_chat(ctx.spec.rl().chat_template, tokenizer):
        for row in text:
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
        ctx.reporter.log(f"prompts: {len(text)} text prompts asked as a user message through the model's chat "
                         "template (`rl_config.chat_template: false` keeps the text as is)")
        text = []
    chat = [r for r in all_rows + eval_rows if isinstance(r["prompt"], list)]
    if text and chat:
        raise DatasetError(f"the prompts mix text ({text[0]['source']} line {text[0]['line']}) and conversational "
                           f"({chat[0]['source']} line {chat[0]['line']}) records; GRPO generates from one kind: "
                           "convert the text prompts to messages (or the reverse), or train on them in separate jobs")
    train_ds = to_dataset(all_rows, "training")
    if ctx.eval_data is not None:
        eval_ds = to_dataset(eval_rows, "eval")
    else:
        train_ds, eval_ds = eval_split(train_ds, engine.eval.fraction, engine.seed)

    dropped: dict[str, int] = {}
    train_ds = _apply_length_policy(ctx, train_ds, tokenizer, what="training", dropped=dropped)
    if len(train_ds) == 0:
        raise DatasetError(f"no training prompt is left after `engine.length_policy: {engine.length_policy.value}` "
                           f"(engine.max_length {engine.max_length}); raise `engine.max_length`")
    if eval_ds is not None:
        eval_ds = _apply_length_policy(ctx, eval_ds, tokenizer, what="eval", dropped=dropped)
        if len(eval_ds) == 0:
            eval_ds = None
    return train_ds, eval_ds, dropped


# -- 3./4. trainer -------------------------------------------------------------------------------------------------

def eval_batch_size(batch_size: int, num_generations: int) -> int:
    """Per-device eval batch: the smallest multiple of `num_generations` holding `batch_size` (TRL's rule)."""
    return num_generations * max(1, math.ceil(batch_size / num_generations))


def config_kwargs(ctx: TrainContext, *, has_eval: bool, reward_weights: list[float] | None) -> dict[str, Any]:
    """GRPOConfig's keyword arguments: the shared TrainingArguments (`training_kwargs`: precision, and on a GPU TF32,
    fused AdamW and Liger kernels when installed) + every `rl_config` key + the generation backend (TRL's colocated
    vLLM engine for `engine.generation: vllm`)."""
    rl: GRPOParams = ctx.spec.rl()
    vllm = uses_vllm(ctx, rl)
    return training_kwargs(
        ctx, has_eval=has_eval,
        per_device_eval_batch_size=eval_batch_size(ctx.spec.engine.batch_size, rl.num_generations),
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=rl.top_k,
        repetition_penalty=rl.repetition_penalty,
        beta=rl.beta,
        epsilon=rl.epsilon,
        epsilon_high=rl.epsilon_high,
        num_iterations=rl.num_iterations,
        loss_type=rl.loss_type,
        # LUSPO is a sequence-level loss: TRL only warns when it runs at token level
        importance_sampling_level="sequence" if rl.loss_type == "luspo" else "token",
        scale_rewards=rl.scale_rewards,
        mask_truncated_completions=rl.mask_truncated_completions,
        generation_batch_size=rl.generation_batch_size,
        steps_per_generation=rl.steps_per_generation,
        use_vllm=vllm,
        # vLLM in this process, on its GPU (no server to run); transformers: the KV cache asked for explicitly (TRL
        # leaves `use_cache` unset, i.e. to the model's generation config), all completions of a step in one call
        **({"vllm_mode": "colocate"} if vllm else {"generation_kwargs": {"use_cache": True}}),
        log_completions=rl.log_completions,
        disable_dropout=rl.disable_dropout,
        reward_weights=reward_weights,
        include_num_input_tokens_seen="no",  # GRPO counts prompt + completion tokens itself
    )


def build_trainer(ctx: TrainContext, model, peft_config, tokenizer, train_ds: Dataset, eval_ds: Dataset | None,
                  callback: FelixCallback) -> TimedGRPOTrainer:
    """The GRPOTrainer for a job (`config_kwargs`), its generation, rewards and steps timed (`grpo_timing`)."""
    rl: GRPOParams = ctx.spec.rl()
    reward_funcs, weights = build_reward_funcs(parse_reward_type(rl.reward_type))
    args = GRPOConfig(**config_kwargs(ctx, has_eval=eval_ds is not None, reward_weights=weights))
    split = TimeSplit()
    trainer = TimedGRPOTrainer(model=model, reward_funcs=timed_rewards(reward_funcs, split), args=args,
                               train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                               peft_config=peft_config,
                               callbacks=[callback, split, ZeroStdWatch(ctx), *tracker_callbacks(ctx)])
    trainer.time_split = split
    if ctx.device == "cpu":
        use_fast_cpu_dropout(trainer.model)
    world = trainer.accelerator.num_processes
    callback.token_count = lambda state: trainer.trained_tokens * world  # the tokens trained on, all ranks
    return trainer


# -- 5. results ----------------------------------------------------------------------------------------------------

def _final_metrics(ctx: TrainContext, trainer: TimedGRPOTrainer, output, callback: FelixCallback,
                   counts: dict[str, int], dropped: dict[str, int]) -> dict[str, Any]:
    state = trainer.state
    step = state.global_step
    logs = numeric(callback.train_logs)
    per_reward = [k for k in logs if k.startswith("rewards/") and k.endswith("/mean")]
    metrics: dict[str, Any] = {}
    for key in (*WINDOW_KEYS, *per_reward):
        if key in logs:
            metrics[key] = logs[key]
    for key in (*OVER_TRAINING_KEYS, *per_reward):
        mean = logged_mean(ctx, key, step)
        if mean is not None:
            metrics[f"{key}_over_training"] = mean
    train_loss = run_train_loss(ctx, step)
    metrics["train_loss"] = train_loss if train_loss is not None else output.training_loss
    evals = numeric(callback.eval_metrics)
    for key in ("eval_reward", "eval_reward_std", "eval_completions/mean_length",
                *(k for k in evals if k.startswith("eval_rewards/") and k.endswith("/mean"))):
        if key in evals:
            metrics[key] = evals[key]
    metrics["num_tokens"] = int(state.num_input_tokens_seen or 0)
    metrics["train_runtime_s"] = round(float(output.metrics.get("train_runtime", 0.0)), 2)
    metrics["steps"] = step
    metrics["epochs"] = round(float(state.epoch or 0), 4)
    metrics["num_train_records"] = len(trainer.train_dataset)
    metrics["num_eval_records"] = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    metrics["num_dropped"] = sum(dropped.values())
    metrics["records_per_dataset"] = counts
    metrics.update(trainer.time_split.totals())
    metrics.update(perf_metrics(callback))
    return metrics


def _keep_completion_logs(ctx: TrainContext) -> None:
    """`log_completions`: TRL's parquet tables of sampled completions move from scratch to `completions/`."""
    src = hf_output_dir(ctx) / "completions"
    if ctx.is_main_process and src.is_dir() and any(src.iterdir()):
        dest = ctx.job.root / "completions"
        dest.mkdir(exist_ok=True)
        for f in src.iterdir():
            shutil.move(str(f), dest / f.name)
        ctx.reporter.log(f"sampled completions (log_completions) in {dest}")


def run(ctx: TrainContext) -> TrainResult:
    """Train a LoRA adapter with GRPO; see the module docstring for the steps."""
    rl: GRPOParams = ctx.spec.rl()
    problems = check_params(rl, ctx.device, ctx.spec.engine.generation)
    if problems:
        raise SpecError(problems)
    configure_threads(ctx)

    tokenizer = load_tokenizer(ctx)
    train_ds, eval_ds, dropped = _setup_data(ctx, tokenizer)
    engine = ctx.spec.engine
    sources = train_ds["source"]
    counts = {name: sources.count(name) for name in dict.fromkeys(d.name for d in ctx.train_data)}
    for name, n in counts.items():
        note = (f" ({dropped[name]} dropped: prompt over engine.max_length {engine.max_length})"
                if name in dropped else "")
        ctx.reporter.log(f"dataset {name}: {n} prompts for training{note}")
    ctx.reporter.warn_lengths(truncated=0, dropped=dropped, max_length=engine.max_length,
                              policy=engine.length_policy.value, unit="prompts")
    # every other column reaches the reward functions: only the data's own columns may
    train_ds = train_ds.remove_columns(["source", "line"])
    eval_ds = eval_ds.remove_columns(["source", "line"]) if eval_ds is not None else None
    if eval_ds is not None:
        source = ctx.eval_data.name if ctx.eval_data is not None else f"{engine.eval.fraction:g} of the prompts"
        ctx.reporter.log(f"eval: {len(eval_ds)} prompts from {source}")
    kind = "conversational" if isinstance(train_ds[0]["prompt"], list) else "text"
    rewards = parse_reward_type(rl.reward_type)
    ctx.reporter.log(
        f"GRPO: {len(train_ds)} {kind} prompts, {rl.num_generations} completions each (≤ {rl.max_completion_length} "
        f"tokens, temperature {rl.temperature}), loss {rl.loss_type}"
        + (" (sequence-level importance sampling)" if rl.loss_type == "luspo" else "")
        + f", beta {rl.beta}; rewards "
        + ", ".join(f"{r.type}×{r.weight:g}" for r in rewards)
        + f"; generation with {'vLLM (colocated)' if uses_vllm(ctx, rl) else 'transformers (batched, KV cache)'}")

    model, peft_config = setup_lora_model(ctx)
    callback = FelixCallback(ctx)
    trainer = build_trainer(ctx, model, peft_config, tokenizer, train_ds, eval_ds, callback)
    log_trainable(ctx, trainer)
    prompts = train_ds["prompt"][:PROMPTS_MEASURED]
    seq_len = mean_length(_prompt_length(tokenizer, p) for p in prompts) + rl.max_completion_length
    setup_throughput(ctx, trainer, callback, algorithm="grpo", seq_len=seq_len, reference_forward=rl.beta > 0)
    output = train(trainer, ctx, callback)
    _keep_completion_logs(ctx)

    if (stopped := stopped_result(ctx, callback)) is not None:
        return stopped

    final_eval(ctx, callback, trainer)
    return complete(ctx, trainer, tokenizer, callback, _final_metrics(ctx, trainer, output, callback, counts, dropped))
