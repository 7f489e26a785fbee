#!/usr/bin/env python
"""Preference accuracy of a decoder LLM on held-out preference pairs: the quality measure of a DPO job. JSON out.

Usage:
    python scripts/eval_dpo.py MODEL PAIRS.jsonl [--ref MODEL] [--beta 0.1] [--max-length 512]
        [--skip N] [--limit N] [--batch-size 8] [--base DIR] [--device cpu|cuda] [--out FILE]

MODEL is a job id, a job folder, a model or adapter folder, or a catalog id (see
`scripts/eval_lm_common.py`). PAIRS holds `{"prompt", "chosen", "rejected"}` records, text (the
`../shared/data/hh_rlhf` files) or conversational (felix's `felix-prefs-mini`); a record without
`prompt` has its shared prefix taken as the prompt (TRL's `extract_prompt`).

For each pair, the summed log-probabilities of the chosen and the rejected completion given the prompt
(tokenized as TRL's DPOTrainer does: the chat template for conversations, EOS after a text completion)
under the policy and under the reference: the base model (the adapter disabled) by default, or `--ref`.
Reports:
- `reward_accuracy`: the share of pairs whose implicit DPO reward margin
  beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))] is positive (TRL's `rewards/accuracies`),
  with the mean margin and mean chosen / rejected rewards;
- `logp_accuracy`: the share with log pi(chosen) > log pi(rejected), and `ref_logp_accuracy` for the
  reference (how often the base already prefers the chosen reply);
- `length_normalized_accuracy`: the same comparison on per-token mean log-probabilities.
Pairs over `--max-length` tokens keep the end of the prompt and the start of the completions
(counted in `truncated`). A model with neither adapter nor `--ref` is compared with itself: its
rewards are all 0 and only the log-probability accuracies say something.
"""

from __future__ import annotations

import argparse
import contextlib

from eval_lm_common import (
    Timer,
    emit,
    load,
    meta,
    pick_device,
    read_jsonl,
    resolve_model_arg,
    sequence_scores,
)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(pair: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen ids, rejected ids) as TRL 1.16's DPOTrainer builds them."""
    prompt = pair["prompt"]
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
        outs = []
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(prompt + pair[key], tokenize=True, return_dict=True)["input_ids"]
            outs.append(full[_common_prefix(prompt_ids, full):])
        return list(prompt_ids), outs[0], outs[1]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return (list(prompt_ids), tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"] + eos,
            tokenizer(pair["rejected"], add_special_tokens=False)["input_ids"] + eos)


def fit(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels) of prompt + completion within `max_length`: the prompt's end and the completion's start."""
    cut = len(prompt) + len(completion) > max_length
    if cut:
        completion = completion[: max(max_length // 2, max_length - len(prompt))]
        prompt = prompt[-(max_length - len(completion)):] if max_length > len(completion) else []
    return prompt + completion, [-100] * len(prompt) + completion, cut


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--ref", default=None, help="reference model (default: the base under the adapter)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta for the reported rewards (default 0.1)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--base", default=None, help="base model folder under an adapter (default: from the adapter)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from trl.data_utils import extract_prompt

    ref = resolve_model_arg(args.model, args.base)
    device = pick_device(args.device)
    pairs = [pair if "prompt" in pair else extract_prompt(pair)
             for pair in read_jsonl(args.data, skip=args.skip, limit=args.limit)]
    if not pairs:
        raise SystemExit(f"error: no pairs in {args.data} after --skip {args.skip}")
    with Timer() as loading:
        model, tokenizer = load(ref, device)
        ref_model = None
        if args.ref:
            ref_model, _ = load(resolve_model_arg(args.ref), device)

    rows, truncated = [], 0
    for pair in pairs:
        prompt_ids, chosen, rejected = tokenize_pair(pair, tokenizer)
        for completion in (chosen, rejected):
            ids, labels, cut = fit(prompt_ids, completion, args.max_length)
            truncated += cut
            rows.append((ids, labels))

    def scores(m):
        return sequence_scores(m, rows, pad_id=tokenizer.pad_token_id, batch_size=args.batch_size, device=device)

    with Timer() as scoring:
        policy = scores(model)
        if ref_model is not None:
            reference = scores(ref_model)
        elif ref.adapter:
            with model.disable_adapter():
                reference = scores(model)
        else:
            reference = policy
    n = len(pairs)
    stats = {"reward_correct": 0, "logp_correct": 0, "ref_logp_correct": 0, "norm_correct": 0,
             "margin": 0.0, "chosen": 0.0, "rejected": 0.0, "ties": 0}
    for i in range(n):
        pc, pr, rc, rr = policy[2 * i], policy[2 * i + 1], reference[2 * i], reference[2 * i + 1]
        chosen_reward = args.beta * (pc["logp"] - rc["logp"])
        rejected_reward = args.beta * (pr["logp"] - rr["logp"])
        margin = chosen_reward - rejected_reward
        stats["reward_correct"] += margin > 0
        stats["ties"] += margin == 0
        stats["logp_correct"] += pc["logp"] > pr["logp"]
        stats["ref_logp_correct"] += rc["logp"] > rr["logp"]
        stats["norm_correct"] += pc["logp"] / max(pc["tokens"], 1) > pr["logp"] / max(pr["tokens"], 1)
        stats["margin"] += margin
        stats["chosen"] += chosen_reward
        stats["rejected"] += rejected_reward

    reference_name = args.ref or ("base (adapter disabled)" if ref.adapter else "the model itself")
    report = {"eval": "dpo_preference", **meta(ref, args.data, device, skip=args.skip), "reference": reference_name,
              "beta": args.beta, "pairs": n,
              "reward_accuracy": round(stats["reward_correct"] / n, 6),
              "reward_margin": round(stats["margin"] / n, 6),
              "reward_chosen": round(stats["chosen"] / n, 6), "reward_rejected": round(stats["rejected"] / n, 6),
              "logp_accuracy": round(stats["logp_correct"] / n, 6),
              "ref_logp_accuracy": round(stats["ref_logp_correct"] / n, 6),
              "length_normalized_accuracy": round(stats["norm_correct"] / n, 6),
              "ties": stats["ties"], "truncated": truncated,
              "seconds": {"load": loading.seconds, "score": scoring.seconds}}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
