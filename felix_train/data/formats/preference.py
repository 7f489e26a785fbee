"""Preference records (DPO): `prompt`, `chosen`, `rejected`, all strings or all lists of messages."""

from __future__ import annotations

from felix_train.data.formats.chat import _check_messages
from felix_train.data.formats.core import ErrorType, _check_string, _kind, _Problems, _require_all


def _check_preference_record(obj: dict, p: _Problems) -> None:
    if not _require_all(p, obj, "chosen", "rejected"):
        return
    chosen, rejected = obj["chosen"], obj["rejected"]
    keys = ["prompt", "chosen", "rejected"] if "prompt" in obj else ["chosen", "rejected"]
    kinds = {_kind(obj[k]) for k in keys}
    if kinds == {"string"}:
        if "prompt" not in obj:
            p.add(
                ErrorType.MISSING_KEY,
                "missing key `prompt`; only conversational pairs (lists of messages) may leave it out",
            )
        else:
            _check_string(p, obj["prompt"], "prompt", allow_empty=True)
        _check_string(p, chosen, "chosen")
        _check_string(p, rejected, "rejected")
    elif kinds == {"list"}:
        if "prompt" in obj:
            _check_messages(p, obj["prompt"], "prompt", require_assistant=False, require_last_assistant=False)
        what = "a preference response" if "prompt" in obj else "a preference conversation"
        for key in ("chosen", "rejected"):
            _check_messages(p, obj[key], key, require_assistant=True, require_last_assistant=True, what=what)
    else:
        got = ", ".join(f"{k}: {_kind(obj[k])}" for k in keys)
        p.add(
            ErrorType.WRONG_TYPE,
            f"`{'`, `'.join(keys)}` must all be strings or all be lists of messages; got {got}",
        )
        return
    if chosen == rejected:
        p.add(
            ErrorType.CHOSEN_EQUALS_REJECTED,
            "`chosen` and `rejected` are identical; a preference pair needs two different responses",
        )
