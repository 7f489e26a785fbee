"""Preference accuracy of a decoder LLM on preference pairs: the measure of a DPO job.

Pairs are `{"prompt", "chosen", "rejected"}`, text or conversational; a pair without `prompt` has its
shared prefix taken as the prompt (TRL's `extract_prompt`). For each pair, the summed log-probabilities
of the chosen and the rejected completion given the prompt (tokenized as TRL's DPOTrainer does: the chat
template for conversations, EOS after a text completion) under the policy and under the reference: the
base model (the adapter disabled) by default, or `reference`. Reported:

- `reward_accuracy`: the share of pairs whose implicit DPO reward margin
  beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))] is positive (TRL's `rewards/accuracies`),
  with the mean margin (`reward_margin`) and mean chosen / rejected rewards;
- `logp_accuracy`: the share with log pi(chosen) > log pi(rejected), and `ref_logp_accuracy` for the
  reference (how often the base already prefers the chosen reply);
- `length_normalized_accuracy`: the same comparison on per-token mean log-probabilities.

`beta` is the job's `rl_config.beta` when SOURCE is a DPO job, else 0.1. Pairs over `max_length` tokens
keep the end of the prompt and the start of the completions (counted in `truncated`). A model with neither
adapter nor `reference` is compared with itself: its rewards are all 0 and only the log-probability
accuracies say something.
"""

from __future__ import annotations

import os
import time

from felix_train.evaluate.lm import load_causal_lm, pick_device, run_info, sequence_scores
from felix_train.models.source import ModelRef

DEFAULT_BETA = 0.1


def tokenize_pair(pair: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen ids, rejected ids) as TRL 1.16's DPOTrainer builds them."""
    prompt = pair["prompt"]
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
        outs = []
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(prompt + pair[key], tokenize=True, return_dict=True)["input_ids"]
            outs.append(full[len(os.path.commonprefix([list(prompt_ids), list(full)])):])  # works on lists
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


def evaluate_preference(ref: ModelRef, records: list[tuple[int, dict]], *, reference: ModelRef | None = None,
                        beta: float | None = None, max_length: int = 512, batch_size: int = 8,
                        device: str | None = None) -> dict:
    """The preference report (see the module docstring)."""
    from trl.data_utils import extract_prompt

    if beta is None:
        beta = float((ref.spec.get("rl_config") or {}).get("beta") or DEFAULT_BETA)
    device = pick_device(device)
    pairs = [pair if "prompt" in pair else extract_prompt(pair) for _, pair in records]
    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(ref, device)
    ref_model = load_causal_lm(reference, device)[0] if reference is not None else None
    load_s = round(time.perf_counter() - t0, 3)

    rows, truncated = [], 0
    for pair in pairs:
        prompt_ids, chosen, rejected = tokenize_pair(pair, tokenizer)
        for completion in (chosen, rejected):
            ids, labels, cut = fit(prompt_ids, completion, max_length)
            truncated += cut
            rows.append((ids, labels))

    def scores(m):
        return sequence_scores(m, rows, pad_id=tokenizer.pad_token_id, batch_size=batch_size, device=device)

    t0 = time.perf_counter()
    policy = scores(model)
    if ref_model is not None:
        ref_scores = scores(ref_model)
    elif ref.adapter is not None:
        with model.disable_adapter():
            ref_scores = scores(model)
    else:
        ref_scores = policy
    score_s = round(time.perf_counter() - t0, 3)

    n = len(pairs)
    stats = {"reward_correct": 0, "logp_correct": 0, "ref_logp_correct": 0, "norm_correct": 0,
             "margin": 0.0, "chosen": 0.0, "rejected": 0.0, "ties": 0}
    for i in range(n):
        pc, pr, rc, rr = policy[2 * i], policy[2 * i + 1], ref_scores[2 * i], ref_scores[2 * i + 1]
        chosen_reward = beta * (pc["logp"] - rc["logp"])
        rejected_reward = beta * (pr["logp"] - rr["logp"])
        margin = chosen_reward - rejected_reward
        stats["reward_correct"] += margin > 0
        stats["ties"] += margin == 0
        stats["logp_correct"] += pc["logp"] > pr["logp"]
        stats["ref_logp_correct"] += rc["logp"] > rr["logp"]
        stats["norm_correct"] += pc["logp"] / max(pc["tokens"], 1) > pr["logp"] / max(pr["tokens"], 1)
        stats["margin"] += margin
        stats["chosen"] += chosen_reward
        stats["rejected"] += rejected_reward

    reference_name = (reference.source if reference is not None
                      else "base (adapter disabled)" if ref.adapter is not None else "the model itself")
    return {"eval": "dpo_preference", **run_info(device), "reference": reference_name, "beta": beta, "pairs": n,
            "reward_accuracy": round(stats["reward_correct"] / n, 6),
            "reward_margin": round(stats["margin"] / n, 6),
            "reward_chosen": round(stats["chosen"] / n, 6), "reward_rejected": round(stats["rejected"] / n, 6),
            "logp_accuracy": round(stats["logp_correct"] / n, 6),
            "ref_logp_accuracy": round(stats["ref_logp_correct"] / n, 6),
            "length_normalized_accuracy": round(stats["norm_correct"] / n, 6),
            "ties": stats["ties"], "truncated": truncated,
            "seconds": {"load": load_s, "score": score_s}}
