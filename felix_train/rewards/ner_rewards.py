"""NER rewards: `entity_f1` over (label, mention) pairs read by `parse_entities` from a JSON object or
`label: mention` lines, with its params model."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from felix_train.rewards.text import _NO_JSON, _parse_json


_LINE_ENTITY = re.compile(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)?([^:\n]+?)\s*:\s*(.+?)\s*$")
_EDGE_PUNCT = " \t\"'`“”‘’.,;:!?()[]{}<>"


def _norm(text: Any) -> str:
    return " ".join(str(text).casefold().split()).strip(_EDGE_PUNCT)


def parse_entities(value: Any) -> list[tuple[str, str]]:
    """(label, mention) pairs, normalised (casefolded, whitespace collapsed, edge punctuation stripped).

    Accepts a dict `{label: [mention, ...]}` (a single string mention is allowed),
    a list of `{"label", "text"}` objects, a JSON string (or ```json block) of either,
    or lines `label: mention`. Anything else gives no entities.
    """
    if value is None:
        return []
    if isinstance(value, str):
        data = _parse_json(value)
        if data is _NO_JSON or not isinstance(data, (dict, list)):
            pairs = []
            for line in value.splitlines():
                m = _LINE_ENTITY.match(line)
                if m:
                    pairs.append((m.group(1), m.group(2)))
            return [(_norm(label), _norm(mention)) for label, mention in pairs if _norm(label) and _norm(mention)]
        value = data
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        for label, mentions in value.items():
            if mentions is None:
                continue
            for mention in (mentions if isinstance(mentions, (list, tuple)) else [mentions]):
                pairs.append((label, mention))
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Mapping):
                label = item.get("label", item.get("type"))
                mention = item.get("text", item.get("mention"))
                if label is not None and mention is not None:
                    pairs.append((label, mention))
    return [(_norm(label), _norm(mention)) for label, mention in pairs
            if not isinstance(mention, (dict, list)) and _norm(label) and _norm(mention)]


def entity_f1(completion: str, entities: Any) -> float | None:
    """F1 between predicted and gold (label, mention) multisets; 1.0 when both are empty.

    The completion and the gold value are read by `parse_entities`. None when the
    dataset row has no gold value (`entities` is None).
    """
    if entities is None:
        return None
    pred, gold = Counter(parse_entities(completion)), Counter(parse_entities(entities))
    if not pred and not gold:
        return 1.0
    hits = sum((pred & gold).values())
    if hits == 0:
        return 0.0
    precision, recall = hits / sum(pred.values()), hits / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


class EntityF1Params(BaseModel):
    """Params of `entity_f1`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("entities", min_length=1, description="Dataset column holding the gold entities: a dict "
                        "`{label: [mention, ...]}` or a JSON string of it.")
