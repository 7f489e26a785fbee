"""The inference process of a deployed job, and the predict contract the API shares with it.

    python -m felix_train.service.serving --job-dir $FELIX_HOME/jobs/<id> --port P [--host 127.0.0.1]

A worker starts one per deployed job (`felix_train.service.worker`). It loads the job's
`model/` once, warms it up, binds `--host:--port` (`--port 0`: any free port), writes
`serving.json` (`{pid, host, port, job_id, family, started_at}`) into the job folder, and serves

| endpoint | |
|---|---|
| `GET /health` | `{"status": "ok", "job_id", "family", "model", "device", ...}` once the model is loaded |
| `POST /predict` | one prediction (bodies below); 422 names the offending field |

The API (`POST /felix/trained-models/{id}/predict`) validates a body with the same request
models, then forwards it over loopback to the port the store records, with the job id in
`X-Felix-Job` (a process serving another job answers 421, so a reused port never answers for
the wrong model).

What is served, from the job folder's model layout:

- GLiNER2 (`model/felix_model.json`): the `gliner2`-format weights it lists (`merged/` for LoRA,
  the folder itself for full training), with `GLiNER2.from_pretrained`; an adapter-only folder is
  loaded on its base (`base_model_path`) and merged in memory.
- Decoder LLMs: `model/merged/` when the job exported it (`engine.export.merged`); otherwise the
  PEFT adapter in `model/` on its base model: `base_model_name_or_path` of `adapter_config.json`
  when that folder exists here, else the spec's catalog model from the local model store. The
  tokenizer and chat template are the ones saved beside the adapter.

Request bodies (`GLiNER2PredictRequest`, `LLMPredictRequest`):

- GLiNER2: `text` or `texts` (a batch, run as batches of `batch_size`), `entities` (labels, or
  `{label: description}`) or `schema` (gliner2's `Schema.from_dict` format: `entities`,
  `classifications`, `relations`, `structures`), `threshold`, `include_confidence`,
  `include_spans`. Answer: `{"result": ...}` (text) or `{"results": [...]}` (texts), each exactly
  what gliner2's `batch_extract` returns.
- LLM: `messages` (chat template applied, with the generation prompt) or `prompt` (raw text, as
  `prompt_completion` text records are trained), `max_new_tokens`, `temperature` (0 = greedy),
  `top_p`, `seed`. Answer: `{"text", "finish_reason": "stop" | "length", "usage": {...}}`.

Requests are served one at a time (the model runs under a lock); a batch of texts is one request.
This module imports only pydantic and the standard library at import time (the API imports
it); torch, transformers, peft and gliner2 are imported inside the predictors.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from felix_train.catalog import ModelFamily, get_entry
from felix_train.errors import ErrorItem, FelixError
from felix_train.jobs import atomic_write_json, read_json, utcnow

log = logging.getLogger("felix_train.serving")

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
    threshold: float = Field(0.5, ge=0, le=1, description="Span score threshold.")
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


# -- predictors (heavy imports inside) ------------------------------------------------------------------


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class GLiNER2Predictor:
    """A trained GLiNER2 model, as `model/felix_model.json` describes it."""

    family = ModelFamily.GLINER2

    def __init__(self, model_dir: Path, *, device: str = "auto", dtype: str = "auto"):
        from gliner2 import GLiNER2

        layout = read_json(model_dir / "felix_model.json") or {}
        files = layout.get("files") or {"model": {"path": "./", "format": "gliner2"}}
        full = next((f for f in files.values() if f.get("format") == "gliner2"), None)
        adapter = next((f for f in files.values() if f.get("format") == "peft-lora"), None)
        self.device = _device(device)
        if full is not None:
            self.source = model_dir / full["path"]
            model = GLiNER2.from_pretrained(str(self.source))
        elif adapter is not None:
            from peft import PeftModel

            base = layout.get("base_model_path")
            if not base or not Path(base).is_dir():
                raise FelixError(f"{model_dir} holds a GLiNER2 adapter whose base {base!r} is not here; "
                                 "retrain with a LoRA export that includes `merged/`")
            self.source = model_dir / adapter["path"]
            model = PeftModel.from_pretrained(GLiNER2.from_pretrained(str(base)), str(self.source)).merge_and_unload()
            model._lora_layers = {}
        else:
            raise FelixError(f"{model_dir / 'felix_model.json'} lists no gliner2 or peft-lora weights")
        self.model = model.to(self.device, dtype=_dtype(dtype, self.device)).eval()

    def warm_up(self) -> None:
        self.model.batch_extract(["Felix warms up in Paris."], self.model.create_schema().entities(["city"]))

    def predict(self, req: GLiNER2PredictRequest) -> dict:
        import torch

        if req.entities is not None:
            schema = self.model.create_schema().entities(req.entities)
        else:
            from gliner2.inference.schema import Schema

            try:
                schema = Schema.from_dict(req.schema_)
            except ValidationError as err:
                raise PredictInputError([ErrorItem(("schema", *e["loc"]), e["msg"], e["type"])
                                         for e in err.errors(include_url=False)]) from None
            except ValueError as err:
                raise PredictInputError([ErrorItem(("schema",), str(err), "value_error")]) from None
        with torch.inference_mode():
            results = self.model.batch_extract(req.batch(), schema, batch_size=req.batch_size,
                                               threshold=req.threshold, include_confidence=req.include_confidence,
                                               include_spans=req.include_spans)
        return {"result": results[0]} if req.text is not None else {"results": results}


class LLMPredictor:
    """A trained decoder LLM: the merged export, or the PEFT adapter on its base."""

    family = ModelFamily.CAUSAL_LM

    def __init__(self, model_dir: Path, *, spec: dict, home: Path, device: str = "auto", dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = _device(device)
        torch_dtype = _dtype(dtype, self.device)
        merged = model_dir / "merged"
        if (merged / "config.json").exists():
            self.source = merged
            model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch_dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(str(merged))
        elif (model_dir / "adapter_config.json").exists():
            from peft import PeftModel

            self.source = model_dir
            self.base = self._base_path(model_dir, spec, home)
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(self.base), dtype=torch_dtype),
                                              str(model_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        elif (model_dir / "config.json").exists():
            self.source = model_dir
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        else:
            raise FelixError(f"{model_dir} holds neither a PEFT adapter (adapter_config.json), `merged/` nor a "
                             "full model (config.json); train the job again")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = sorted({*eos, *([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [])})

    @staticmethod
    def _base_path(model_dir: Path, spec: dict, home: Path) -> Path:
        """The base an adapter was trained on: as recorded in adapter_config.json, else the catalog model."""
        recorded = (read_json(model_dir / "adapter_config.json") or {}).get("base_model_name_or_path")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
        from felix_train.models import resolve_model

        entry = get_entry(spec.get("catalog_model") or spec.get("base_model") or "")
        if entry is None:
            raise FelixError(f"the adapter's base {recorded!r} is not here and the spec names no catalog model")
        return Path(resolve_model(entry, home))

    def warm_up(self) -> None:
        self.predict(LLMPredictRequest(prompt="Hello", max_new_tokens=1))

    def prompt_ids(self, req: LLMPredictRequest) -> list[int]:
        if req.messages is not None:
            out = self.tokenizer.apply_chat_template([m.model_dump() for m in req.messages], add_generation_prompt=True,
                                                     tokenize=True, return_dict=True)
            ids = out["input_ids"]
        else:
            ids = self.tokenizer(req.prompt)["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def predict(self, req: LLMPredictRequest) -> dict:
        import torch

        ids = self.prompt_ids(req)
        input_ids = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": req.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                                  "eos_token_id": self.eos_ids or None}
        if req.temperature > 0:
            kwargs.update(do_sample=True, temperature=req.temperature, top_p=req.top_p)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new = out[0][len(ids):].tolist()
        stopped = bool(new) and new[-1] in self.eos_ids
        return {"text": self.tokenizer.decode(new, skip_special_tokens=True),
                "finish_reason": "stop" if stopped else "length",
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new)}}


def load_predictor(job_dir: Path, *, home: Path, device: str = "auto", dtype: str = "auto"):
    """The predictor for the job folder's `model/`; FelixError when it cannot be served."""
    spec = read_json(job_dir / "spec.json")
    if spec is None:
        raise FelixError(f"{job_dir} has no spec.json; is it a job folder?")
    model_dir = job_dir / "model"
    if not model_dir.is_dir():
        raise FelixError(f"{job_dir} has no model/ folder; only a `complete` job can be served")
    family = job_family(spec)
    if family == ModelFamily.GLINER2:
        return GLiNER2Predictor(model_dir, device=device, dtype=dtype)
    return LLMPredictor(model_dir, spec=spec, home=home, device=device, dtype=dtype)


# -- the HTTP app ---------------------------------------------------------------------------------------


def create_serving_app(predictor, *, job_id: str, loaded_in_s: float | None = None, on_shutdown=None):
    """`/health` and `/predict` over one loaded predictor; `on_shutdown()` runs when the server stops."""
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, Header, Request
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app):
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title=f"felix serving {job_id}", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    lock = threading.Lock()
    stats = {"requests": 0, "started_at": utcnow()}

    @app.exception_handler(PredictInputError)
    async def _bad_input(request: Request, exc: PredictInputError):
        return JSONResponse({"detail": exc.to_list()}, status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "job_id": job_id, "family": predictor.family.value, "model": str(predictor.source),
                "device": predictor.device, "loaded_in_s": loaded_in_s, "pid": os.getpid(), **stats}

    # fastapi is imported in this function, so its markers are defaults (string annotations would not resolve)
    @app.post("/predict")
    def predict(payload: Any = Body(None), x_felix_job: str | None = Header(None)):  # noqa: B008
        if x_felix_job is not None and x_felix_job != job_id:
            return JSONResponse({"detail": f"this process serves job {job_id}, not {x_felix_job}"}, status_code=421)
        req = parse_predict_request(predictor.family, payload)
        started = time.perf_counter()
        with lock:
            out = predictor.predict(req)
            stats["requests"] += 1
        return {"id": job_id, "family": predictor.family.value, **out,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m felix_train.service.serving",
                                description="Serve one job's trained model: GET /health, POST /predict.")
    p.add_argument("--job-dir", required=True, help="the job folder ($FELIX_HOME/jobs/<id>)")
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port; see serving.json)")
    p.add_argument("--host", default=SERVING_HOST, help=f"address to bind (default {SERVING_HOST})")
    p.add_argument("--home", default=None, help="$FELIX_HOME for base models (default: the job folder's home)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="weights dtype (auto: bf16 on GPUs that support it, else fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job_dir = Path(args.job_dir).expanduser().resolve()
    home = Path(args.home).expanduser() if args.home else job_dir.parents[1]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.monotonic()
    try:
        predictor = load_predictor(job_dir, home=home, device=args.device, dtype=args.dtype)
        predictor.warm_up()
    except FelixError as err:
        print(f"cannot serve {job_dir}: {err}", file=sys.stderr, flush=True)
        return 1
    loaded_in = round(time.monotonic() - started, 3)
    try:
        sock = _bind(args.host, args.port)
    except OSError as err:
        print(f"cannot listen on {args.host}:{args.port}: {err}; pick another --port (0: any free one)",
              file=sys.stderr, flush=True)
        return 1
    port = sock.getsockname()[1]
    job_id = job_dir.name
    info_path = job_dir / SERVING_FILE
    atomic_write_json(info_path, {"pid": os.getpid(), "host": args.host, "port": port, "job_id": job_id,
                                  "family": predictor.family.value, "model": str(predictor.source),
                                  "started_at": utcnow()})

    def _forget() -> None:
        if (read_json(info_path, default={}) or {}).get("pid") == os.getpid():
            info_path.unlink(missing_ok=True)

    atexit.register(_forget)  # uvicorn re-raises SIGTERM after its shutdown: the app's lifespan forgets too
    print(f"serving job {job_id} ({predictor.family.value}, {predictor.source}) on http://{args.host}:{port} "
          f"(loaded in {loaded_in}s, device {predictor.device})", flush=True)

    import uvicorn

    app = create_serving_app(predictor, job_id=job_id, loaded_in_s=loaded_in, on_shutdown=_forget)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on"))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
