"""Mean reward and numeric accuracy of greedy answers to prompt-only records: the measure of a GRPO job.

Records hold a `prompt` (text, or a list of chat messages) plus the columns the rewards read, typically a
gold `answer` (`"72"`, or a rationale ending in `#### 72`; `../shared/data/gsm8k` works as it is).

Every prompt gets one greedy completion (`max_new_tokens`, default the job's
`rl_config.max_completion_length`, else 256). A conversational prompt goes through the chat template (as
GRPO trains on it); a text prompt is asked the way the GRPO job asks it: as one user message through the
template (`rl_config.chat_template`, true by default, and for a base model) when the model has one, else as
is; `chat` (or `system`) decides it instead when given. Reported:

- `numeric_accuracy`: the share whose final number equals the gold `answer`
  (`felix_train.rewards.numeric_match`), over the records that have one (`numeric_judged`);
- `reward_mean`: the weighted reward sum per completion, with the job's own `rl_config.reward_type` when
  SOURCE is a GRPO job (else `reward_type`, default `numeric_match`), and each reward's mean;
- `no_number`: completions without any number; `samples`: the first few prompts and completions.
"""

from __future__ import annotations

import time
from typing import Any

from felix_train.evaluate.lm import generate_greedy, load_causal_lm, pick_device, run_info
from felix_train.models.source import ModelRef

DEFAULT_MAX_NEW_TOKENS = 256


def prompt_ids(record: dict, tokenizer, *, chat: bool | None = None, system: str | None = None) -> list[int]:
    prompt = record["prompt"]
    if isinstance(prompt, str) and (chat or system):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        if system and not (prompt and prompt[0].get("role") == "system"):
            prompt = [{"role": "system", "content": system}, *prompt]
        return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def evaluate_reward(ref: ModelRef, records: list[tuple[int, dict]], *, reward_type: Any = None,
                    max_new_tokens: int | None = None, chat: bool | None = None, system: str | None = None,
                    batch_size: int = 8, samples: int = 5, device: str | None = None) -> dict:
    """The reward report (see the module docstring)."""
    from felix_train.rewards import build_reward_funcs, completion_text, extract_final_number, numeric_match
    from felix_train.rl_config import text_prompts_as_chat

    rl = ref.spec.get("rl_config") or {}
    reward_type = reward_type or rl.get("reward_type") or "numeric_match"
    max_new = max_new_tokens or rl.get("max_completion_length") or DEFAULT_MAX_NEW_TOKENS
    funcs, weights = build_reward_funcs(reward_type)
    device = pick_device(device)
    rows = [record for _, record in records]
    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(ref, device)
    load_s = round(time.perf_counter() - t0, 3)
    if chat is None:  # as the GRPO trainer renders them
        chat = text_prompts_as_chat(rl.get("chat_template", True), tokenizer)
    prompts = [prompt_ids(r, tokenizer, chat=chat, system=system) for r in rows]
    t0 = time.perf_counter()
    completions = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=batch_size,
                                  device=device)
    generate_s = round(time.perf_counter() - t0, 3)

    conversational = isinstance(rows[0]["prompt"], list)
    as_trl = [[{"role": "assistant", "content": c}] for c in completions] if conversational else completions
    columns = {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r) if k != "prompt"}
    per_reward, totals = {}, [0.0] * len(rows)
    for func, weight in zip(funcs, weights):
        values = func(prompts=[r["prompt"] for r in rows], completions=as_trl, **columns)
        scored = [v for v in values if v is not None]
        per_reward[func.__name__] = {"weight": weight, "mean": round(sum(scored) / len(scored), 6) if scored else None,
                                     "scored": len(scored)}
        totals = [t + weight * (v or 0.0) for t, v in zip(totals, values)]  # TRL's weighted sum: None counts 0
    numeric = [numeric_match(c, r.get("answer")) for c, r in zip(completions, rows)]
    judged = [v for v in numeric if v is not None]

    return {"eval": "grpo_reward", **run_info(device), "problems": len(rows), "max_new_tokens": max_new,
            "prompt_format": "chat" if conversational or chat or system else "text",
            "numeric_accuracy": round(sum(judged) / len(judged), 6) if judged else None,
            "numeric_judged": len(judged),
            "reward_mean": round(sum(totals) / len(totals), 6), "rewards": per_reward,
            "no_number": sum(1 for c in completions if extract_final_number(c) is None),
            "mean_completion_chars": round(sum(len(c) for c in completions) / len(completions), 1),
            "samples": [{"prompt": completion_text(r["prompt"])[-300:], "answer": r.get("answer"), "completion": c}
                        for r, c in list(zip(rows, completions))[:samples]],
            "seconds": {"load": load_s, "generate": generate_s}}
