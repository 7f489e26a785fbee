"""The predictors of the inference process: a job's trained model loaded once, and one prediction at a time.

What is served, from the job folder's model layout:

- GLiNER2 (`model/felix_model.json`): the `gliner2`-format weights it lists (`merged/` for LoRA,
  the folder itself for full training), with `GLiNER2.from_pretrained`; an adapter-only folder is
  loaded on its base (`base_model_path`) and merged in memory. A request without `threshold` gets
  the saved thresholds, one without `decoding` the saved entity decoding (`decoding`; flat keeps the
  best of overlapping spans of any label: `felix_train.ner_decoding`); the spans and confidences
  flat decoding needs are asked for and dropped again where the request did not ask for them (a
  schema with other tasks is asked twice then, its other tasks answered as the request's flags ask).
- Decoder LLMs, through the one LLM loader (`felix_train.models.lm_loader`): `model/merged/` when the
  job exported it (`engine.export.merged`); otherwise the PEFT adapter in `model/` on its base model:
  `base_model_name_or_path` of `adapter_config.json` when that folder exists here, else the spec's
  catalog model from the local model store. The tokenizer and chat template are the ones saved beside
  the loaded folder.

torch, transformers, peft and gliner2 are imported inside the functions that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from felix_train.catalog import ModelFamily
from felix_train.errors import ErrorItem, FelixError
from felix_train.jobs import read_json
from felix_train.models.source import ModelRef, SourceNotFound, resolve_source
from felix_train.ner_decoding import DECODINGS, FLAT, NESTED, flat_entities, plain_entities
from felix_train.service.serving.protocol import (
    GLiNER2PredictRequest,
    LLMPredictRequest,
    PredictInputError,
    job_family,
)

def _device(name: str) -> str:
    from felix_train.perf.hardware import pick_device

    return pick_device(name)


def _dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class GLiNER2Predictor:
    """A trained GLiNER2 model, as `model/felix_model.json` describes it."""

    family = ModelFamily.GLINER2

    def __init__(self, ref: ModelRef, *, device: str = "auto", dtype: str = "auto"):
        from gliner2 import GLiNER2

        self.device = _device(device)
        if ref.weights is not None:
            self.source = ref.weights
            model = GLiNER2.from_pretrained(str(self.source))
        elif ref.adapter is not None:
            from peft import PeftModel

            if ref.base_path is None:
                raise FelixError(f"{ref.model_dir} holds a GLiNER2 adapter whose base "
                                 f"{ref.info.get('base_model_path')!r} is not here; "
                                 "retrain with a LoRA export that includes `merged/`")
            self.source = ref.adapter
            model = PeftModel.from_pretrained(GLiNER2.from_pretrained(str(ref.base_path)),
                                              str(self.source)).merge_and_unload()
            model._lora_layers = {}
        else:
            raise FelixError(f"{ref.model_dir / 'felix_model.json'} lists no gliner2 or peft-lora weights")
        self.model = model.to(self.device, dtype=_dtype(dtype, self.device)).eval()
        saved = ref.info.get("thresholds")  # chosen on the eval split by the trainer: the default when a request gives none
        self.thresholds = {str(k): float(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
        saved = ref.info.get("decoding")  # how the trainer decoded entities: the default when a request gives none
        self.decoding = saved if saved in DECODINGS else NESTED

    def warm_up(self) -> None:
        self.model.batch_extract(["Felix warms up in Paris."], self.model.create_schema().entities(["city"]))

    def predict(self, req: GLiNER2PredictRequest) -> dict:
        import torch

        threshold, entities = req.threshold, req.entities
        if "threshold" not in req.model_fields_set and self.thresholds:
            threshold = self.thresholds.get("default", threshold)
            if entities is not None:  # per-label thresholds, beside any description
                items = entities.items() if isinstance(entities, dict) else ((e, None) for e in entities)
                entities = {e: {**({"description": d} if d else {}),
                                **({"threshold": self.thresholds[e]} if e in self.thresholds and e != "default" else {})}
                            for e, d in items}
        if entities is not None:
            schema = self.model.create_schema().entities(entities)
        else:
            from gliner2.inference.schema import Schema

            try:
                schema = Schema.from_dict(req.schema_)
            except ValidationError as err:
                raise PredictInputError([ErrorItem(("schema", *e["loc"]), e["msg"], e["type"])
                                         for e in err.errors(include_url=False)]) from None
            except ValueError as err:
                raise PredictInputError([ErrorItem(("schema",), str(err), "value_error")]) from None
        flat = (req.decoding or self.decoding) == FLAT
        with torch.inference_mode():
            results = self.model.batch_extract(req.batch(), schema, batch_size=req.batch_size, threshold=threshold,
                                               include_confidence=req.include_confidence or flat,
                                               include_spans=req.include_spans or flat)
            own = [None] * len(results)
            if flat and not (req.include_confidence and req.include_spans) and any(
                    set(r) - {"entities"} for r in results if isinstance(r, dict)):
                # other tasks beside entities: their answer as gliner2 gives it for the request's own flags
                own = self.model.batch_extract(req.batch(), schema, batch_size=req.batch_size, threshold=threshold,
                                               include_confidence=req.include_confidence,
                                               include_spans=req.include_spans)
        if flat:
            results = [_flat_result(r, o, req.include_confidence, req.include_spans) for r, o in zip(results, own)]
        return {"result": results[0]} if req.text is not None else {"results": results}


def _flat_result(full: dict, own: dict | None, include_confidence: bool, include_spans: bool) -> dict:
    """One answer: the entities of `full` (asked with spans and confidences) decoded flat and given as gliner2 gives
    them for the caller's `include_*` flags, every other task as `own` (the answer asked with those flags) holds it,
    else as `full` does (the caller asked for both, or there is no other task)."""
    if not isinstance(full, dict):
        return full
    other = own if isinstance(own, dict) else full
    entities = full.get("entities")
    if isinstance(entities, dict):
        entities = plain_entities(flat_entities(entities), include_confidence=include_confidence,
                                  include_spans=include_spans)
    return {k: entities if k == "entities" else other[k] for k in other}


class LLMPredictor:
    """A trained decoder LLM: the merged export, or the PEFT adapter on its base."""

    family = ModelFamily.CAUSAL_LM

    def __init__(self, ref: ModelRef, *, device: str = "auto", dtype: str = "auto"):
        from felix_train.models.lm_loader import causal_lm_source, load_causal_lm

        self.device = _device(device)
        self.source = causal_lm_source(ref, prefer_merged=True)  # the merged export, a full model, or the adapter
        self.model, self.tokenizer = load_causal_lm(ref, self.device, dtype=_dtype(dtype, self.device),
                                                    prefer_merged=True)
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = sorted({*eos, *([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [])})

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
    """The predictor for the job folder's `model/` (found by the one resolver, `models.source`); FelixError
    when it cannot be served."""
    if read_json(job_dir / "spec.json") is None:
        raise FelixError(f"{job_dir} has no spec.json; is it a job folder?")
    if not (job_dir / "model").is_dir():
        raise FelixError(f"{job_dir} has no model/ folder; only a `complete` job can be served")
    try:
        ref = resolve_source(job_dir, home=home)
    except SourceNotFound as err:
        raise FelixError(str(err)) from err
    if job_family(ref.spec) == ModelFamily.GLINER2:
        return GLiNER2Predictor(ref, device=device, dtype=dtype)
    return LLMPredictor(ref, device=device, dtype=dtype)

