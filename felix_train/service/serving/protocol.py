"""The predict contract the API shares with the inference process: request models, their validation, loopback HTTP.

The API (`POST /felix/trained-models/{id}/predict`) validates a body with these request models
(`parse_predict_request`), then forwards it with `post_json` over loopback to the port the store
records, with the job id in `X-Felix-Job` (a process serving another job answers 421, so a
reused port never answers for the wrong model) and the deployment's secret (`auth.py`: without
it, 401). The inference process validates it again with the same models.

Request bodies:

- GLiNER2 (`GLiNER2PredictRequest`): `text` or `texts` (a batch, run as batches of `batch_size`),
  `entities` (labels, or `{label: description}`) or `schema` (gliner2's `Schema.from_dict`
  format: `entities`, `classifications`, `relations`, `structures`), `threshold`, `decoding`,
  `include_confidence`, `include_spans`. Answer: `{"result": ...}` (text) or `{"results": [...]}`
  (texts), each exactly what gliner2's `batch_extract` returns.
- LLM (`LLMPredictRequest`): `messages` (chat template applied, with the generation prompt) or
  `prompt` (raw text, as `prompt_completion` text records are trained), `max_new_tokens`,
  `temperature` (0 = greedy), `top_p`, `seed`. Answer: `{"text", "finish_reason": "stop" |
  "length", "usage": {...}}`.

Only pydantic and the standard library are imported here (the API imports this module).
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from felix_train.catalog import ModelFamily, get_entry
from felix_train.errors import ErrorItem, FelixError

SERVING_HOST = "127.0.0.1"
"""Inference processes listen on loopback only: the API on the same machine forwards to them."""

SERVING_FILE = "serving.json"
"""Written into the job folder once the process has bound its port: `{pid, host, port, ...}`."""

SERVING_LOG = "serving.log"
"""The inference process' output, in the job folder (the worker redirects it there)."""

JOB_HEADER = "X-Felix-Job"
"""The job a forwarded predict is meant for; another job's process answers 421."""

MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000


# -- the predict contract (pydantic only) ------------------------------------------------------------


class PredictInputError(FelixError):
    """A predict body is invalid. `errors` lists every problem, located (`loc` without `body`)."""

    def __init__(self, errors: list[ErrorItem]):
        self.errors = list(errors)
        lines = [f"  {'.'.join(str(p) for p in e.loc) or '(body)'}: {e.msg}" for e in self.errors]
        super().__init__("predict body is invalid:\n" + "\n".join(lines))

    def to_list(self, prefix: tuple = ("body",)) -> list[dict]:
        return [{"loc": [*prefix, *e.loc], "msg": e.msg, "type": e.type} for e in self.errors]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GLiNER2PredictRequest(_Strict):
    """Extraction with a deployed GLiNER2 model: one of `text`/`texts`, one of `entities`/`schema`."""

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS, description="One text.")
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_TEXTS,
                                    description=f"A batch of texts (at most {MAX_TEXTS}), run as batches.")
    entities: list[str] | dict[str, str] | None = Field(
        None, description="Entity labels, or `{label: description}`.")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="A gliner2 schema (`Schema.from_dict`): entities, classifications, "
                                          "relations, structures.")
    threshold: float = Field(0.5, ge=0, le=1, description="Span score threshold (default: the model's saved "
                                                          "thresholds, else 0.5).")
    decoding: Literal["flat", "nested"] | None = Field(
        None, description="Entities: `flat` keeps only the best-scoring of overlapping spans of any label, `nested` "
                          "gliner2's label-by-label answer (default: the model's saved decoding, else nested).")
    batch_size: int = Field(8, ge=1, le=MAX_TEXTS, description="Texts per forward pass.")
    include_confidence: bool = Field(False, description="Scores beside each extracted text.")
    include_spans: bool = Field(False, description="Character offsets beside each extracted text.")

    def cross_field_errors(self) -> list[ErrorItem]:
        errors = []
        if (self.text is None) == (self.texts is None):
            both = self.text is not None
            errors.append(ErrorItem(("texts" if both else "text",), "give exactly one of `text` (one string) or "
                                    f"`texts` (a list); got {'both' if both else 'neither'}", "text_or_texts"))
        for i, text in enumerate(self.texts or []):
            if not text.strip() or len(text) > MAX_TEXT_CHARS:
                errors.append(ErrorItem(("texts", i), f"each text must be 1 to {MAX_TEXT_CHARS} characters and not "
                                        "blank", "text_length"))
        if (self.entities is None) == (self.schema_ is None):
            both = self.entities is not None
            errors.append(ErrorItem(("schema" if both else "entities",), "give exactly one of `entities` (labels) or "
                                    f"`schema` (a gliner2 schema); got {'both' if both else 'neither'}",
                                    "entities_or_schema"))
        if self.entities is not None:
            labels = list(self.entities)
            if not labels:
                errors.append(ErrorItem(("entities",), "list at least one entity label", "too_short"))
            elif any(not isinstance(x, str) or not x.strip() for x in labels):
                errors.append(ErrorItem(("entities",), "entity labels must be non-blank strings", "blank_label"))
            elif len(set(labels)) != len(labels):
                errors.append(ErrorItem(("entities",), "entity labels must be unique", "duplicate_label"))
        return errors

    def batch(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=MAX_TEXT_CHARS)


class LLMPredictRequest(_Strict):
    """Generation with a deployed LLM: one of `messages` (chat) or `prompt` (raw text)."""

    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=1024,
                                               description="A conversation; the chat template is applied with the "
                                                           "generation prompt.")
    prompt: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS,
                               description="Raw text to continue (no chat template).")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Most tokens generated.")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy decoding; above 0 samples.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (with temperature > 0).")
    seed: int | None = Field(None, ge=0, description="Seed for sampling (reproducible answers).")

    def cross_field_errors(self) -> list[ErrorItem]:
        if (self.messages is None) == (self.prompt is None):
            both = self.messages is not None
            return [ErrorItem(("prompt" if both else "messages",), "give exactly one of `messages` (a chat) or "
                              f"`prompt` (raw text); got {'both' if both else 'neither'}", "messages_or_prompt")]
        return []


REQUEST_MODELS: dict[ModelFamily, type[_Strict]] = {
    ModelFamily.GLINER2: GLiNER2PredictRequest,
    ModelFamily.CAUSAL_LM: LLMPredictRequest,
}


def job_family(spec: dict | None) -> ModelFamily:
    """The model family of a job from its stored spec (`catalog_model`, else `base_model`)."""
    spec = spec or {}
    entry = get_entry(spec.get("catalog_model") or spec.get("base_model") or "")
    if entry is None:
        raise FelixError(f"the job's base model {spec.get('base_model')!r} is not in the catalog; it cannot be served")
    return entry.family


def parse_predict_request(family: ModelFamily, payload: Any) -> GLiNER2PredictRequest | LLMPredictRequest:
    """Validate a predict body for `family`; PredictInputError lists every problem, located."""
    model = REQUEST_MODELS[family]
    if not isinstance(payload, dict):
        got = type(payload).__name__ if payload is not None else "null"
        raise PredictInputError([ErrorItem((), f"the body must be a JSON object, got {got}", "model_type")])
    try:
        request = model.model_validate(payload)
    except ValidationError as err:
        items = []
        for e in err.errors(include_url=False):
            loc, msg = tuple(e["loc"]), e["msg"]
            if e["type"] == "extra_forbidden":
                fields = [f.alias or name for name, f in model.model_fields.items()]
                msg = f"unknown field `{loc[-1]}`; a {family.value} model takes: {', '.join(fields)}"
            items.append(ErrorItem(loc, msg, e["type"]))
        raise PredictInputError(items) from None
    errors = request.cross_field_errors()
    if errors:
        raise PredictInputError(errors)
    return request


def request_json(request: BaseModel) -> dict:
    return request.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- loopback HTTP (standard library: no proxies, no extra dependency) ---------------------------------


def _call(host: str, port: int, method: str, path: str, body: dict | None, headers: dict | None,
          timeout_s: float) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode("utf-8")
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def get_json(host: str, port: int, path: str, *, headers: dict | None = None, timeout_s: float = 2.0) -> tuple[int, Any]:
    """`GET http://host:port/path` → (status, JSON body). Raises OSError/HTTPException/ValueError."""
    return _call(host, port, "GET", path, None, headers, timeout_s)


def post_json(host: str, port: int, path: str, body: dict, *, headers: dict | None = None,
              timeout_s: float = 300.0) -> tuple[int, Any]:
    """`POST` a JSON body → (status, JSON body). Raises OSError/HTTPException/ValueError."""
    return _call(host, port, "POST", path, body, headers, timeout_s)

