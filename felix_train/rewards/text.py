"""Text helpers the rewards share: the text of a completion (plain or conversational) and its JSON part."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


def completion_text(value: Any) -> str:
    """Text of a completion or prompt, plain or conversational.

    A string is returned as is; a conversational value (a list of
    `{"role", "content"}` messages, or one such message) gives its messages'
    contents joined by newlines; multimodal content parts contribute their `text`.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _content_text(value.get("content"))
    if isinstance(value, Sequence):
        return "\n".join(t for t in (completion_text(m) for m in value) if t)
    return str(value)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # [{"type": "text", "text": "..."}, ...]
        parts = [p.get("text") or "" if isinstance(p, Mapping) else str(p) for p in content]
        return "".join(parts)
    return str(content)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def _json_text(text: str) -> str:
    """The JSON part of a completion: the first ```json (or bare ```) fenced block if any, else the whole text."""
    blocks = _FENCE.findall(text)
    for lang, body in blocks:
        if lang.lower() == "json":
            return body.strip()
    for lang, body in blocks:
        if not lang:
            return body.strip()
    return text.strip()


_NO_JSON = object()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(_json_text(text))
    except (json.JSONDecodeError, ValueError):
        return _NO_JSON
