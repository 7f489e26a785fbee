"""Which model a SOURCE names: the one model resolver, for `felix-train eval` and for serving.

A SOURCE is any of, tried in this order:

- a folder: a job folder (`.../jobs/<id>`, holding `model/`) or a model folder (a job's `model/`, a
  saved GLiNER2 or Hugging Face model, a PEFT adapter);
- a job id under `$FELIX_HOME/jobs/` (`$FELIX_HOME` defaults to `~/.felix`);
- a catalog base-model id (`felix/gliner2-minilm-l6`, `felix/tiny-llm`): the untrained base, materialised
  through `felix_train.models.resolve_model`, so a fine-tuned model can be compared with where it started.

`resolve_source` returns a `ModelRef`: the model folder as found, the weights a family's library loads
(`merged/` of a LoRA job when present, else the folder itself), the PEFT adapter and its base, the
model family, and the job's spec and `felix_model.json` when there are any. Nothing here loads weights
or imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from felix_train.catalog import ModelFamily, get_entry
from felix_train.errors import FelixError
from felix_train.jobs import felix_home, read_json

__all__ = ["ModelRef", "RefKind", "SourceNotFound", "resolve_source"]

INFO_FILE = "felix_model.json"  # felix's description of a model folder (the model store's READY_MARKER too)


class SourceNotFound(FelixError):
    """A SOURCE names no job, model folder or catalog model (or one without a model yet)."""


class RefKind(str, Enum):
    """What a SOURCE named."""

    JOB = "job"
    FOLDER = "folder"
    CATALOG = "catalog"


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are, and what it is."""

    source: str  # the SOURCE as given
    kind: RefKind
    model_dir: Path  # the model folder as found: a job's model/, the given folder, a base model's folder
    family: ModelFamily | None  # None when nothing says (neither catalog, spec, felix_model.json nor config.json)
    weights: Path | None = None  # full weights the family's library loads (`merged/` or `model_dir`)
    adapter: Path | None = None  # a PEFT adapter folder
    base_path: Path | None = None  # the adapter's base folder, when recorded and present
    catalog_id: str | None = None  # the catalog model this one is, or was trained from
    job_dir: Path | None = None
    spec: dict = field(default_factory=dict)  # the job's spec.json, {} outside a job
    info: dict = field(default_factory=dict)  # model_dir/felix_model.json, {} when none
    home: Path | None = None  # the $FELIX_HOME override it was resolved with (a catalog base materialises there)

    def base(self) -> Path:
        """The adapter's base model folder, materialising the catalog base when its recorded folder is gone."""
        if self.base_path is not None:
            return self.base_path
        entry = get_entry(self.catalog_id or "")
        if entry is None:
            raise SourceNotFound(f"cannot find the base model of the adapter in {self.adapter}: no local folder and "
                                 f"no catalog id recorded (got {self.catalog_id!r}); evaluate its `merged/` export")
        from felix_train.models import resolve_model

        return Path(resolve_model(entry, self.home))

    def describe(self) -> dict:
        """A JSON-ready summary for reports."""
        return {"source": self.source, "kind": self.kind.value, "family": self.family.value if self.family else None,
                "model_dir": str(self.model_dir), "weights": _str(self.weights), "adapter": _str(self.adapter),
                "base": _str(self.base_path), "catalog_id": self.catalog_id,
                "job": self.job_dir.name if self.job_dir else None}


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _family_of_config(path: Path) -> ModelFamily | None:
    """What a saved model's config.json says it is: GLiNER2 (`architecture`/`GLiNER2`) or a Hugging Face LM."""
    config = read_json(path / "config.json")
    if not isinstance(config, dict):
        return None
    if "architecture" in config or "GLiNER2" in (config.get("architectures") or []) or \
            config.get("model_type") == "extractor":
        return ModelFamily.GLINER2
    if config.get("model_type"):
        return ModelFamily.CAUSAL_LM
    return None


def _family(spec: dict, info: dict, model_dir: Path, weights: Path | None, adapter: Path | None) -> ModelFamily | None:
    for model_id in (spec.get("catalog_model"), spec.get("base_model"), info.get("id")):
        entry = get_entry(model_id or "")
        if entry is not None:
            return entry.family
    if info.get("family") in {f.value for f in ModelFamily}:
        return ModelFamily(info["family"])
    if weights is not None and _family_of_config(weights) is not None:
        return _family_of_config(weights)
    if adapter is not None:  # a bare PEFT adapter: gliner2's own trainer records its base class
        base_class = (read_json(adapter / "adapter_config.json") or {}).get("base_model_class")
        return ModelFamily.GLINER2 if base_class == "GLiNER2" else ModelFamily.CAUSAL_LM
    return _family_of_config(model_dir)


def _from_folder(source: str, kind: RefKind, model_dir: Path, job_dir: Path | None) -> ModelRef:
    """A model folder (a job's model/ or any saved model) as a ModelRef."""
    info = read_json(model_dir / INFO_FILE) or {}
    spec = (read_json(job_dir / "spec.json") or {}) if job_dir is not None else {}
    weights = next((p for p in (model_dir / "merged", model_dir) if (p / "config.json").is_file()), None)
    adapter = model_dir if (model_dir / "adapter_config.json").is_file() else None
    for entry in (info.get("files") or {}).values():  # a GLiNER2 job: felix_model.json lists its folders
        if isinstance(entry, dict) and entry.get("format") == "peft-lora":
            adapter = model_dir / entry.get("path", "")
    base_path, recorded = None, None
    if adapter is not None:
        recorded = (read_json(adapter / "adapter_config.json") or {}).get("base_model_name_or_path")
        base_path = next((Path(p) for p in (recorded, info.get("base_model_path")) if p and Path(p).is_dir()), None)
    catalog_id = next((i for i in (spec.get("catalog_model"), spec.get("base_model"), info.get("base_model"),
                                   info.get("id"), recorded) if get_entry(i or "") is not None), None)
    return ModelRef(source=source, kind=kind, model_dir=model_dir,
                    family=_family(spec, info, model_dir, weights, adapter), weights=weights, adapter=adapter,
                    base_path=base_path, catalog_id=catalog_id, job_dir=job_dir, spec=spec, info=info)


def _from_job(source: str, job_dir: Path) -> ModelRef:
    model_dir = job_dir / "model"
    if not model_dir.is_dir():
        status = (read_json(job_dir / "status.json") or {}).get("status", "unknown")
        raise SourceNotFound(f"job {job_dir.name!r} has no model yet (status {status}); evaluate it once it is "
                             "`complete`, or name one of its checkpoints' folders")
    return _from_folder(source, RefKind.JOB, model_dir, job_dir)


def resolve_source(source: str | os.PathLike, *, home: str | os.PathLike | None = None) -> ModelRef:
    """The model a SOURCE names (see the module docstring).

    Raises:
        SourceNotFound: nothing fits; the message lists what was tried.
        ModelNotAvailable: a catalog id whose weights cannot be materialised offline.
    """
    return replace(_resolve(str(source), home), home=Path(home) if home is not None else None)


def _resolve(text: str, home: str | os.PathLike | None) -> ModelRef:
    path = Path(text).expanduser()
    if path.is_dir():
        if not _is_model_folder(path) and (path / "model").is_dir():
            return _from_job(text, path)
        job_dir = path.parent if path.name == "model" and (
            (path.parent / "spec.json").is_file() or path.parent.parent.name == "jobs") else None
        if not _is_model_folder(path) and not (path / "merged" / "config.json").is_file():
            raise SourceNotFound(f"{text} is a folder but holds no model (no config.json, adapter_config.json, "
                                 "merged/ or model/); name a job folder, a model folder or a job id")
        return _from_folder(text, RefKind.JOB if job_dir else RefKind.FOLDER, path, job_dir)
    if path.exists():
        raise SourceNotFound(f"{text} is a file; SOURCE is a job id, a job folder, a model folder or a catalog id")
    if "/" not in text and os.sep not in text and text not in ("", ".", ".."):
        job_dir = felix_home(home) / "jobs" / text
        if job_dir.is_dir():
            return _from_job(text, job_dir)
    entry = get_entry(text)
    if entry is not None:
        from felix_train.models import resolve_model

        model_dir = Path(resolve_model(entry, home))
        ref = _from_folder(text, RefKind.CATALOG, model_dir, None)
        return replace(ref, family=entry.family, catalog_id=entry.id)
    raise SourceNotFound(
        f"no model at {text!r}: tried a folder, a job id ({felix_home(home) / 'jobs' / text}) and a catalog id; "
        "see `felix-train jobs list` and `felix-train models list`")
