#!/usr/bin/env python
"""Mean reward and numeric accuracy of greedy answers to held-out math problems: the quality measure of a GRPO job.

Usage:
    python scripts/eval_grpo.py MODEL PROBLEMS.jsonl [--reward-type JSON] [--max-new-tokens N]
        [--system TEXT] [--chat | --no-chat] [--skip N] [--limit N] [--batch-size 8] [--base DIR]
        [--device cpu|cuda] [--samples 5] [--out FILE]

MODEL is a job id, a job folder, a model or adapter folder, or a catalog id (see
`scripts/eval_lm_common.py`). PROBLEMS holds GSM8K-style records: a `prompt` (text, or a list of chat
messages) and a gold `answer` (`"72"`, or a rationale ending in `#### 72`), plus any column a reward reads
(`../shared/data/gsm8k/*.jsonl` and felix's `felix-math-mini` work as they are).

Every prompt gets one greedy completion (`--max-new-tokens`, default the job's
`rl_config.max_completion_length`, else 256). A conversational prompt goes through the chat template (as
GRPO trains on it); a text prompt is used as is, like TRL's GRPOTrainer does, unless `--chat` (or
`--system`) wraps it as a user message. Reported:
- `numeric_accuracy`: the share whose final number equals the gold answer (`felix_train.rewards.numeric_match`);
- `reward_mean`: the weighted reward sum per completion, with the job's own `rl_config.reward_type`
  when MODEL is a job (else `--reward-type`, default `numeric_match`), and each reward's mean;
- `no_number`: completions without any number; `samples`: the first few prompts and completions.
"""

from __future__ import annotations

import argparse
import json

from eval_lm_common import Timer, emit, generate_greedy, load, meta, pick_device, read_jsonl, resolve_model_arg


def prompt_ids(record: dict, tokenizer, *, chat: bool | None, system: str | None) -> list[int]:
    prompt = record["prompt"]
    if isinstance(prompt, str) and (chat or system):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        if system and not (prompt and prompt[0].get("role") == "system"):
            prompt = [{"role": "system", "content": system}, *prompt]
        return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--reward-type", default=None,
                   help="rewards as JSON (the rl_config form); default the job's, else numeric_match")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--system", default=None, help="a system message for every prompt (implies --chat)")
    p.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap text prompts as user turns")
    p.add_argument("--no-chat", dest="chat", action="store_false")
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=5, help="prompts and completions to include in the report")
    p.add_argument("--base", default=None, help="base model folder under an adapter (default: from the adapter)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from felix_train.rewards import build_reward_funcs, completion_text, extract_final_number, numeric_match

    ref = resolve_model_arg(args.model, args.base)
    rl = ref.spec().get("rl_config") or {}
    reward_type = json.loads(args.reward_type) if args.reward_type else rl.get("reward_type") or "numeric_match"
    max_new = args.max_new_tokens or rl.get("max_completion_length") or 256
    funcs, weights = build_reward_funcs(reward_type)
    device = pick_device(args.device)
    records = read_jsonl(args.data, skip=args.skip, limit=args.limit)
    if not records:
        raise SystemExit(f"error: no records in {args.data} after --skip {args.skip}")
    missing = [i + 1 + args.skip for i, r in enumerate(records) if "prompt" not in r]
    if missing:
        raise SystemExit(f"error: records without a `prompt`: lines {missing[:10]}")
    with Timer() as loading:
        model, tokenizer = load(ref, device)
    prompts = [prompt_ids(r, tokenizer, chat=args.chat, system=args.system) for r in records]
    with Timer() as generating:
        completions = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=args.batch_size,
                                      device=device)

    conversational = isinstance(records[0]["prompt"], list)
    as_trl = [[{"role": "assistant", "content": c}] for c in completions] if conversational else completions
    columns = {k: [r.get(k) for r in records] for k in dict.fromkeys(k for r in records for k in r) if k != "prompt"}
    per_reward, totals = {}, [0.0] * len(records)
    for func, weight in zip(funcs, weights):
        values = func(prompts=[r["prompt"] for r in records], completions=as_trl, **columns)
        scored = [v for v in values if v is not None]
        per_reward[func.__name__] = {"weight": weight, "mean": round(sum(scored) / len(scored), 6) if scored else None,
                                     "scored": len(scored)}
        totals = [t + weight * (v or 0.0) for t, v in zip(totals, values)]  # TRL's weighted sum: None counts 0
    numeric = [numeric_match(c, r.get("answer")) for c, r in zip(completions, records)]
    judged = [v for v in numeric if v is not None]

    report = {"eval": "grpo_math", **meta(ref, args.data, device, skip=args.skip), "problems": len(records),
              "max_new_tokens": max_new,
              "prompt_format": "chat" if conversational or args.chat or args.system else "text",
              "numeric_accuracy": round(sum(judged) / len(judged), 6) if judged else None,
              "numeric_judged": len(judged),
              "reward_mean": round(sum(totals) / len(totals), 6), "rewards": per_reward,
              "no_number": sum(1 for c in completions if extract_final_number(c) is None),
              "mean_completion_chars": round(sum(len(c) for c in completions) / len(completions), 1),
              "samples": [{"prompt": completion_text(r["prompt"])[-300:], "answer": r.get("answer"), "completion": c}
                          for r, c in list(zip(records, completions))[: args.samples]],
              "seconds": {"load": loading.seconds, "generate": generating.seconds}}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
