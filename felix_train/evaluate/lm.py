"""Loss and perplexity of a decoder LLM on chats / prompt-completion / text records: the measure of an SFT job.

Records are tokenized exactly as SFT trains on them (`felix_train.trainers.sft.tokenize_record`): only
the assistant replies / completions are scored (what `completion_only_loss: true` trains; `all_tokens`
scores every token). Records longer than `max_length` tokens are cut there (counted in `truncated`).

Reported: `loss` (mean negative log-likelihood per scored token, nats), `perplexity` (exp of it),
`token_accuracy` (top-1 next-token accuracy on the scored tokens), `tokens`, `records`, and the same
per record format (`by_format`).

Also the pieces the preference and reward evals share: loading a causal LM (`load_causal_lm`, the one loader
in `felix_train.models.lm_loader`, which serving uses too: an adapter on its base, so the base is the adapter
disabled), summed log-probabilities of labelled tokens, greedy generation.
"""

from __future__ import annotations

import math
import time

from felix_train.data.formats import detect_record_format
from felix_train.models.lm_loader import load_causal_lm
from felix_train.models.source import ModelRef
from felix_train.perf.hardware import pick_device


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


def run_info(device: str) -> dict:
    """Where the scoring ran."""
    import torch

    return {"device": device, "threads": torch.get_num_threads()}


def _summary(selected: list[dict]) -> dict:
    tokens = sum(s["tokens"] for s in selected)
    nll = -sum(s["logp"] for s in selected)
    loss = nll / tokens if tokens else float("nan")
    return {"records": len(selected), "tokens": tokens, "loss": round(loss, 6) if tokens else None,
            "perplexity": round(math.exp(loss), 4) if tokens and loss < 700 else None,
            "token_accuracy": round(sum(s["correct"] for s in selected) / tokens, 6) if tokens else None}


def evaluate_lm(ref: ModelRef, records: list[tuple[int, dict]], *, all_tokens: bool = False, max_length: int = 1024,
                batch_size: int = 8, device: str | None = None) -> dict:
    """The perplexity report (see the module docstring)."""
    from trl.chat_template_utils import has_generation_markers

    from felix_train.trainers.sft import tokenize_record, training_chat_template

    device = pick_device(device)
    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(ref, device)
    load_s = round(time.perf_counter() - t0, 3)
    completion_only = not all_tokens
    if completion_only and any("messages" in r for _, r in records) and not (
            isinstance(tokenizer.chat_template, str) and has_generation_markers(tokenizer.chat_template)):
        tokenizer.chat_template = training_chat_template(tokenizer, ref.catalog_id or ref.source)  # renders the same

    rows, formats, truncated = [], [], 0
    for _, record in records:
        tokens = tokenize_record(record, tokenizer, completion_only=completion_only)
        ids, labels = tokens["input_ids"], tokens["labels"]
        if len(ids) > max_length:
            ids, labels, truncated = ids[:max_length], labels[:max_length], truncated + 1
        rows.append((ids, labels))
        formats.append(detect_record_format(record).value)
    t0 = time.perf_counter()
    scores = sequence_scores(model, rows, pad_id=tokenizer.pad_token_id, batch_size=batch_size, device=device)
    score_s = round(time.perf_counter() - t0, 3)
    return {"eval": "sft_perplexity", **run_info(device),
            "scored": "replies / completions" if completion_only else "all tokens",
            **_summary(scores), "truncated": truncated, "no_scored_tokens": sum(1 for s in scores if not s["tokens"]),
            "by_format": {f: _summary([s for s, g in zip(scores, formats) if g == f]) for f in dict.fromkeys(formats)},
            "seconds": {"load": load_s, "score": score_s}}
