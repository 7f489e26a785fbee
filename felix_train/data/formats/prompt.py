"""Prompt-only records (GRPO): `prompt` (a string or a list of messages) plus the columns the rewards read."""

from __future__ import annotations

from felix_train.data.formats.chat import _check_messages
from felix_train.data.formats.core import _check_string, _Problems


def _check_prompt_record(obj: dict, p: _Problems) -> None:
    prompt = obj["prompt"]
    if isinstance(prompt, list):
        _check_messages(p, prompt, "prompt", require_assistant=False, require_last_assistant=False)
    elif isinstance(prompt, str):
        _check_string(p, prompt, "prompt")
    else:
        p.wrong_type("prompt", prompt, "a string or a list of messages")
