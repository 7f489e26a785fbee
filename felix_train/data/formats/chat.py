"""Chat and prompt-completion records (SFT): `messages`, `prompt_completion` and `text`.

`_check_messages` (TRL's conversational format, a list of `{role, content}`) is shared with the preference
and prompt-only families.
"""

from __future__ import annotations

from typing import Any

from felix_train.data.formats.core import ErrorType, _check_string, _kind, _Problems, _require_all, _short


ROLES = ("system", "user", "assistant", "tool")
"""Chat roles a message may have."""


def _check_messages(
    p: _Problems,
    value: Any,
    path: str,
    *,
    require_assistant: bool,
    require_last_assistant: bool,
    what: str = "an SFT conversation",
) -> None:
    """A list of {role, content} messages (TRL's conversational format)."""
    if not isinstance(value, list):
        p.wrong_type(path, value, "a list of {role, content} objects")
        return
    if not value:
        p.add(ErrorType.EMPTY_VALUE, f"`{path}` is an empty list")
        return
    roles: list[str | None] = []
    for i, msg in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(msg, dict):
            p.wrong_type(where, msg, "an object with `role` and `content`")
            roles.append(None)
            continue
        role = msg.get("role")
        if "role" not in msg:
            p.add(ErrorType.MISSING_KEY, f"`{where}` has no `role`; expected one of {', '.join(ROLES)}")
        elif not isinstance(role, str):
            p.wrong_type(f"{where}.role", role, "a string")
        elif role not in ROLES:
            p.add(ErrorType.UNKNOWN_ROLE, f"{where}.role is {_short(role)}; expected one of {', '.join(ROLES)}")
        roles.append(role if isinstance(role, str) else None)

        has_tool_calls = role == "assistant" and isinstance(msg.get("tool_calls"), list) and bool(msg["tool_calls"])
        content = msg.get("content")
        if "content" not in msg:
            if not has_tool_calls:
                p.add(ErrorType.MISSING_KEY, f"`{where}` has no `content`")
        elif content is None and has_tool_calls:
            pass
        elif not isinstance(content, str):
            p.wrong_type(f"{where}.content", content, "a string")
        elif role == "assistant" and not content.strip() and not has_tool_calls:
            p.add(
                ErrorType.EMPTY_CONTENT,
                f"{where}.content is empty in an assistant turn; there is nothing to learn from it: "
                "write the reply or drop the record",
            )
    if require_assistant and "assistant" not in roles:
        p.add(ErrorType.NO_ASSISTANT_TURN, f"`{path}` has no assistant turn; {what} needs at least one")
    elif require_last_assistant and roles[-1] != "assistant":
        p.add(
            ErrorType.LAST_TURN_NOT_ASSISTANT,
            f"{path}[{len(value) - 1}] (the last turn) is {_short(roles[-1])}; {what} must end with an "
            "assistant turn: drop the trailing turns or add the assistant reply",
        )


def _check_messages_record(obj: dict, p: _Problems) -> None:
    _check_messages(p, obj["messages"], "messages", require_assistant=True, require_last_assistant=True)
    if "tools" in obj and obj["tools"] is not None:
        tools = obj["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            p.wrong_type("tools", tools, "a list of tool (function schema) objects")


def _check_text_record(obj: dict, p: _Problems) -> None:
    _check_string(p, obj["text"], "text")


def _check_prompt_completion_record(obj: dict, p: _Problems) -> None:
    if not _require_all(p, obj, "prompt", "completion"):
        return
    prompt, completion = obj["prompt"], obj["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        _check_string(p, completion, "completion")
    elif isinstance(prompt, list) and isinstance(completion, list):
        _check_messages(p, prompt, "prompt", require_assistant=False, require_last_assistant=False)
        _check_messages(
            p, completion, "completion", require_assistant=True, require_last_assistant=True, what="`completion`"
        )
    else:
        p.add(
            ErrorType.WRONG_TYPE,
            f"`prompt` and `completion` must both be strings or both be lists of messages; "
            f"got prompt: {_kind(prompt)}, completion: {_kind(completion)}",
        )
