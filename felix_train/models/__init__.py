"""Loading and building base models: the local model store `$FELIX_HOME/models/<id>/`.

`resolve_model(entry)` returns a folder in the model's own library format, trying the
catalog entry's sources in order: the Hugging Face cache (offline), a builder
(`felix_train.models.<family>:build_*`), or a GGUF file shipped in a Python package
(dequantised once). A built base is materialised once and reused, so a LoRA adapter
always applies to the same base weights. Family-specific code lives in
`models/gliner2.py` and `models/causal_lm.py` and is imported only when used; `models/source.py` resolves
which model a SOURCE names, and `models/lm_loader.py` loads a decoder LLM (eval and serving alike).
"""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from pathlib import Path

from felix_train.catalog import BaseModelEntry, ModelSource, SourceKind
from felix_train.errors import ModelNotAvailable
from felix_train.jobs import atomic_write_json, felix_home, read_json, utcnow

READY_MARKER = "felix_model.json"


def store_path(model_id: str, home: str | os.PathLike | None = None) -> Path:
    return felix_home(home) / "models" / model_id.replace("/", "--")


def _import(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _materialise(dest: Path, build, source: ModelSource, entry: BaseModelEntry) -> Path:
    """Build into a temp folder beside `dest`, then rename: a half-built model is never seen."""
    if (dest / READY_MARKER).exists():
        return dest
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        atomic_write_json(tmp / READY_MARKER, {"id": entry.id, "source": source.kind.value, "created_at": utcnow()})
        try:
            os.replace(tmp, dest)
        except OSError:  # another process materialised it first
            if not (dest / READY_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _from_hub(source: ModelSource) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source.repo_id, local_files_only=True))


def ready_model(entry: BaseModelEntry, home: str | os.PathLike | None = None) -> Path | None:
    """The local folder of a catalog model if it is already materialised, else None; never builds or converts
    (for the API process, which must not load torch: building a tiny model or converting a GGUF does)."""
    dest = store_path(entry.id, home)
    return dest if (dest / READY_MARKER).exists() else None


def resolve_model(entry: BaseModelEntry, home: str | os.PathLike | None = None) -> Path:
    """The local folder of a catalog model, materialising it once; ModelNotAvailable when none works."""
    dest = store_path(entry.id, home)
    if (dest / READY_MARKER).exists():
        return dest
    tried = []
    for source in entry.sources:
        try:
            if source.kind == SourceKind.HUB:
                return _from_hub(source)
            if source.kind == SourceKind.BUILD:
                return _materialise(dest, _import(source.builder), source, entry)
            if source.kind == SourceKind.GGUF_PACKAGE:
                from felix_train.models.causal_lm import from_gguf_package

                return _materialise(dest, lambda out: from_gguf_package(out, source.package, source.filename), source, entry)
        except ModelNotAvailable as err:
            tried.append(f"{source.kind.value}: {err}")
        except Exception as err:  # noqa: BLE001 - each source failing is reported together below
            if source.kind == SourceKind.BUILD or source.kind == SourceKind.GGUF_PACKAGE:
                if not isinstance(err, (ImportError, FileNotFoundError)):
                    raise
            tried.append(f"{source.kind.value} ({source.repo_id or source.package or source.builder}): "
                         f"{type(err).__name__}: {err}. {source.hint}".strip())
    raise ModelNotAvailable(
        f"base model {entry.id!r} is not available offline. Tried:\n  - " + "\n  - ".join(tried)
        + f"\nProvide it through one of those sources, or pick a local model from `felix-train models list`."
    )


def model_info(path: Path) -> dict | None:
    return read_json(Path(path) / READY_MARKER)
