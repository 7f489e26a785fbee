"""One SFT record tokenized exactly as TRL 1.16's `SFTTrainer` builds it: `input_ids` and `labels`.

The SFT trainer (`trainers/sft_data.py`) and the estimate (`felix_train.estimate`) both call
`tokenize_record`, so the tokens an estimate counts are the tokens a job trains on. Torch-free:
it works on whatever tokenizer it is given (the trainer's `AutoTokenizer`, or transformers'
`PreTrainedTokenizerFast` loaded from the model folder, which never imports torch).
"""

from __future__ import annotations

import os

from felix_train.errors import FelixError


def _ids(encoded) -> list[int]:
    ids = encoded["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    return len(os.path.commonprefix([a, b]))  # works on lists


def tokenize_record(record: dict, tokenizer, *, completion_only: bool) -> dict[str, list[int]]:
    """`input_ids` and `labels` (-100 = not trained on) of one record, as TRL 1.16's SFTTrainer builds them.

    - `messages`: the chat template; with `completion_only`, only tokens inside `{% generation %}`
      (the assistant replies and their end-of-turn token) are trained on.
    - `prompt`/`completion` (text or messages): with `completion_only`, only the completion (plus EOS for text).
    - `text`: the text plus EOS, all trained on.

    Raises:
        FelixError: `completion_only` and the chat template marks no assistant token in a conversation.
    """
    eos = tokenizer.eos_token
    tools = record.get("tools")
    if "messages" in record:
        out = tokenizer.apply_chat_template(record["messages"], tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=completion_only)
        ids = _ids(out)
        if not completion_only:
            return {"input_ids": ids, "labels": list(ids)}
        mask = out["assistant_masks"]
        mask = mask[0] if mask and isinstance(mask[0], list) else mask
        if 1 not in mask:
            raise FelixError("the chat template marks no assistant token in a conversation; its "
                             "`{% generation %}` markers do not wrap the assistant replies")
        return {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]}
    if "prompt" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            prompt_ids = _ids(tokenizer.apply_chat_template(prompt, tools=tools, tokenize=True, return_dict=True,
                                                            add_generation_prompt=True))
            ids = _ids(tokenizer.apply_chat_template(prompt + completion, tools=tools, tokenize=True,
                                                     return_dict=True))
        else:
            if not completion.endswith(eos):
                completion = completion + eos
            prompt_ids = _ids(tokenizer(prompt))
            ids = _ids(tokenizer(prompt + completion))
        start = _common_prefix(prompt_ids, ids) if completion_only else 0
        return {"input_ids": ids, "labels": [-100] * start + ids[start:]}
    text = record["text"]
    if not text.endswith(eos):
        text = text + eos
    ids = _ids(tokenizer(text))
    return {"input_ids": ids, "labels": list(ids)}
