"""The dataset registry: named, validated JSONL files under `$FELIX_HOME/datasets/`.

```
$FELIX_HOME/datasets/<name>/
  data.jsonl       the records, copied in (temp file + rename)
  manifest.json    DatasetManifest: state processing|ready|failed, format, counts, sha256, errors; replaced atomically
```

Datasets that belong to a user of the API live in that user's own namespace, under their own names:

```
$FELIX_HOME/datasets/_users/<owner>/<name>/      data.jsonl, manifest.json as above
```

`DatasetRegistry(home, owner=7)` (or `registry.for_owner(7)`) sees user 7's datasets and the built-ins (a
user's own dataset of a built-in's name wins); the unscoped registry (`felix-train datasets`) sees the shared
folder only. `_users` cannot be a dataset name, so the two never collide. A job spec names its owner in
`engine.dataset_owner`, so the runner resolves the same datasets the API validated. Before per-user folders
the API kept user 7's `ner` as the shared `u7--ner`; a scoped registry still reads such a folder.

A dataset is registered in two halves, so that an API can answer an upload at once and validate later:
`register_processing` copies the file and writes the `processing` manifest; `validate` reads it and writes
`ready` or `failed` (with the bad lines). `add` does both. Invalid content is never an exception: the
manifest's state says it (a validation that breaks off, even on a RecursionError or an interrupt, still
ends the manifest `failed`, never `processing`). Files in `felix_train/data/builtin/*.jsonl` are datasets too: `get` and `list`
register them on first use, marked `builtin: true`.
"""

from __future__ import annotations

import builtins
import difflib
import hashlib
import os
import re
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from felix_train.catalog import Algorithm, ModelFamily
from felix_train.data.formats import (
    DatasetFormat,
    LineError,
    accepted_formats,
    format_mismatch_message,
    validate_file,
)
from felix_train.errors import DatasetError, ErrorItem
from felix_train.jobs import atomic_write_json, felix_home, read_json, utcnow

DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(DATASET_NAME_PATTERN)

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
"""Where built-in datasets ship: `<name>.jsonl`. Read at call time, so tests may monkeypatch it."""

MANIFEST_MAX_ERRORS = 200
"""How many line errors a manifest keeps; `num_errors` counts them all."""

USERS_DIR = "_users"
"""`datasets/_users/<owner>/`: a user's own datasets (`_users` is not a valid dataset name: no collision)."""

LEGACY_PREFIX = "u{owner}--"
"""How the API named a user's dataset in the shared folder before per-user folders (still read)."""

DATA_FILE = "data.jsonl"
MANIFEST_FILE = "manifest.json"
_COPY_CHUNK = 1 << 20


class DatasetState(str, Enum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class DatasetManifest(BaseModel):
    """`$FELIX_HOME/datasets/<name>/manifest.json`."""

    model_config = ConfigDict(extra="ignore")

    name: str
    state: DatasetState
    format: DatasetFormat | None = Field(None, description="Set once validated (None while processing).")
    num_records: int = 0
    num_errors: int = Field(0, description="Every problem found; `errors` keeps the first 200.")
    sha256: str | None = Field(None, description="Of data.jsonl.")
    created_at: str
    validated_at: str | None = None
    error: str | None = Field(None, description="One-line summary when `failed`.")
    errors: list[LineError] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, description="The original file name.")
    builtin: bool = False


def validate_dataset_name(name: Any) -> str:
    """Return `name` if it is a valid dataset name, else raise DatasetError (no paths, no traversal)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise DatasetError(
            f"dataset name must match {DATASET_NAME_PATTERN} (letters, digits, '_', '-', '.'; "
            f"starting with a letter or digit; at most 128), got {name!r}"
        )
    return name


class DatasetRegistry:
    """The datasets under `$FELIX_HOME/datasets` (or `home`/datasets), built-ins included.

    With `owner`, the datasets of that user (`datasets/_users/<owner>/`) and the built-ins.
    """

    def __init__(self, home: str | os.PathLike | None = None, *, owner: int | None = None,
                 builtin_dir: str | os.PathLike | None = None):
        self.home = felix_home(home)
        self.owner = owner
        self.shared_root = self.home / "datasets"
        self.root = self.shared_root if owner is None else self.shared_root / USERS_DIR / str(int(owner))
        self._builtin_dir = Path(builtin_dir) if builtin_dir is not None else None

    def for_owner(self, owner: int | None) -> DatasetRegistry:
        """The same registry scoped to `owner`'s datasets (None: the shared one)."""
        return DatasetRegistry(self.home, owner=owner, builtin_dir=self._builtin_dir)

    # -- paths -------------------------------------------------------------------------------------------------
    @property
    def builtin_dir(self) -> Path:
        return self._builtin_dir if self._builtin_dir is not None else BUILTIN_DIR

    def dataset_dir(self, name: str) -> Path:
        """Where dataset `name` lives: its folder in this registry (a user's legacy folder while it exists)."""
        return self._registered_dir(name) or self.root / name

    def _registered_dir(self, name: str) -> Path | None:
        """The folder holding a registered `name` in this scope, or None."""
        folder = self.root / validate_dataset_name(name)
        if (folder / MANIFEST_FILE).is_file():
            return folder
        legacy = self._legacy_dir(name)
        if legacy is not None and (legacy / MANIFEST_FILE).is_file():
            return legacy
        return None

    def _legacy_dir(self, name: str) -> Path | None:
        """The shared folder `u<owner>--<name>` in which the API kept a user's dataset before per-user folders."""
        return None if self.owner is None else self.shared_root / f"{LEGACY_PREFIX.format(owner=self.owner)}{name}"

    def _shared(self) -> DatasetRegistry:
        return self if self.owner is None else self.for_owner(None)

    def _builtin_path(self, name: str) -> Path | None:
        path = self.builtin_dir / f"{name}.jsonl"
        return path if path.is_file() else None

    def builtin_names(self) -> builtins.list[str]:
        if not self.builtin_dir.is_dir():
            return []
        return sorted(p.stem for p in self.builtin_dir.glob("*.jsonl") if _NAME_RE.fullmatch(p.stem))

    # -- read --------------------------------------------------------------------------------------------------
    def _read_manifest(self, name: str, folder: Path) -> DatasetManifest | None:
        path = folder / MANIFEST_FILE
        raw = read_json(path)
        if raw is None:
            return None
        try:
            manifest = DatasetManifest.model_validate(raw)
        except ValidationError as err:
            raise DatasetError(f"{path} is not a valid dataset manifest; delete the dataset and add it again") from err
        return manifest if manifest.name == name else manifest.model_copy(update={"name": name})  # a legacy folder

    def _write_manifest(self, manifest: DatasetManifest, folder: Path) -> None:
        atomic_write_json(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))

    def exists(self, name: str) -> bool:
        """Registered in this scope: a user's own datasets only; a built-in once registered (shared registry)."""
        return self._registered_dir(name) is not None

    def get(self, name: str) -> DatasetManifest:
        """The manifest of `name`; a built-in not yet registered is registered (and validated) first.

        Raises:
            DatasetError: the name is invalid or no such dataset exists.
        """
        folder = self._registered_dir(name)
        manifest = self._read_manifest(name, folder) if folder is not None else None
        if manifest is not None:
            return manifest
        builtin = self._builtin_path(name)
        if builtin is None:
            raise DatasetError(self._not_found_message(name))
        return self._shared().get(name) if self.owner is not None else self._register_builtin(name, builtin)

    def _not_found_message(self, name: str) -> str:
        known = sorted(set(self._registered_names()) | set(self.builtin_names()))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"no dataset named {name!r}; {hint}`felix-train datasets list` shows them"

    def _registered_names(self) -> builtins.list[str]:
        names = set()
        if self.root.is_dir():
            names.update(p.name for p in self.root.iterdir()
                         if _NAME_RE.fullmatch(p.name) and (p / MANIFEST_FILE).is_file())
        if self.owner is not None and self.shared_root.is_dir():
            prefix = LEGACY_PREFIX.format(owner=self.owner)
            names.update(p.name[len(prefix):] for p in self.shared_root.glob(f"{prefix}*")
                         if _NAME_RE.fullmatch(p.name[len(prefix):]) and (p / MANIFEST_FILE).is_file())
        return sorted(names)

    def list(self) -> builtins.list[DatasetManifest]:
        """Every dataset, built-ins included (registering those not yet registered), sorted by name."""
        if self.owner is not None:
            own = {m.name: m for m in (self.get(n) for n in self._registered_names())}
            shared = {m.name: m for m in self._shared().list() if m.builtin}
            return [m for _, m in sorted({**shared, **own}.items())]
        registered = set(self._registered_names())
        for name in self.builtin_names():
            if name not in registered:
                self._register_builtin(name, self.builtin_dir / f"{name}.jsonl")
        out = []
        for name in self._registered_names():
            manifest = self._read_manifest(name, self.root / name)
            if manifest is not None:
                out.append(manifest)
        return out

    def data_path(self, name: str) -> Path:
        """Path of the dataset's data.jsonl (a built-in is registered first).

        Raises:
            DatasetError: the name is invalid or no such dataset exists.
        """
        self.get(name)
        if self.owner is not None and not self.exists(name):  # a built-in
            return self._shared().data_path(name)
        return self.dataset_dir(name) / DATA_FILE

    # -- write -------------------------------------------------------------------------------------------------
    def add(self, name: str, file: str | os.PathLike | BinaryIO, *, overwrite: bool = False) -> DatasetManifest:
        """Copy `file` in as dataset `name` and validate it: the manifest ends `ready` or `failed`.

        Raises:
            DatasetError: invalid name, missing source file, or `name` exists and `overwrite` is False.
        """
        self.register_processing(name, file, overwrite=overwrite)
        return self.validate(name)

    def register_processing(
        self,
        name: str,
        file: str | os.PathLike | BinaryIO,
        *,
        overwrite: bool = False,
        source: str | None = None,
        builtin: bool = False,
    ) -> DatasetManifest:
        """First half of `add`: copy `file` (a path or a binary file object) in; manifest `processing`.

        `source` names the original file (defaults to the path's or file object's name).

        Raises:
            DatasetError: invalid name, missing source file, or `name` exists and `overwrite` is False.
        """
        validate_dataset_name(name)
        if isinstance(file, (str, os.PathLike)):
            src = Path(file)
            if not src.is_file():
                raise DatasetError(f"no file {str(src)!r} to add as dataset {name!r}; check the path")
            source = source or src.name
        else:
            source = source or Path(str(getattr(file, "name", "") or "upload.jsonl")).name
        if self.exists(name) and not overwrite:
            raise DatasetError(
                f"dataset {name!r} already exists; pass overwrite=True (`--overwrite`) to replace it, or pick another name"
            )

        folder = self.dataset_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{DATA_FILE}.", suffix=".tmp", dir=folder)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                if isinstance(file, (str, os.PathLike)):
                    with open(file, "rb") as fh:
                        _copy(fh, out, digest)
                else:
                    _copy(file, out, digest)
                out.flush()
                os.fsync(out.fileno())
            manifest = DatasetManifest(
                name=name,
                state=DatasetState.PROCESSING,
                sha256=digest.hexdigest(),
                created_at=utcnow(),
                source=source,
                builtin=builtin,
            )
            # The manifest says `processing` before the new data takes the old one's place.
            self._write_manifest(manifest, folder)
            os.replace(tmp, folder / DATA_FILE)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return manifest

    def validate(self, name: str) -> DatasetManifest:
        """Second half of `add`: validate data.jsonl, write the manifest `ready` or `failed`.

        Raises:
            DatasetError: the name is invalid or `name` is not registered.
        """
        folder = self._registered_dir(name)
        manifest = self._read_manifest(name, folder) if folder is not None else None
        if manifest is None:
            raise DatasetError(self._not_found_message(name))
        path = folder / DATA_FILE
        updates: dict[str, Any] = {"validated_at": utcnow()}
        try:
            report = validate_file(path, max_errors=MANIFEST_MAX_ERRORS)
        except OSError as err:
            updates.update(state=DatasetState.FAILED, error=f"cannot read {path}: {err}; add the dataset again")
        except RecursionError:
            updates.update(state=DatasetState.FAILED, error=f"a record of {manifest.source or DATA_FILE} is nested "
                           "too deeply to check; flatten it and add the dataset again")
        except BaseException as err:  # never leave the dataset `processing`: record why, then let it go on
            self._write_manifest(manifest.model_copy(update={
                **updates, "state": DatasetState.FAILED,
                "error": f"validation stopped: {type(err).__name__}: {err}; add the dataset again"}), folder)
            raise
        else:
            updates.update(
                format=report.format,
                num_records=report.num_records,
                num_errors=report.num_errors,
                errors=report.errors,
                columns=report.columns,
                stats=report.stats,
            )
            if report.ok:
                updates.update(state=DatasetState.READY, error=None)
            else:
                first = report.errors[0].msg if report.errors else "no records"
                more = f" (and {report.num_errors - 1} more; see `errors`)" if report.num_errors > 1 else ""
                updates.update(
                    state=DatasetState.FAILED,
                    error=f"{report.num_errors} problem(s) in {manifest.source or DATA_FILE}: {first}{more}",
                )
        manifest = manifest.model_copy(update=updates)
        self._write_manifest(manifest, folder)
        return manifest

    def delete(self, name: str) -> None:
        """Remove the dataset's folder. A deleted built-in comes back (re-registered) on its next `get`.

        Raises:
            DatasetError: the name is invalid or `name` is not registered.
        """
        folder = self.dataset_dir(name)
        if not folder.is_dir():
            raise DatasetError(self._not_found_message(name))
        shutil.rmtree(folder)

    def _register_builtin(self, name: str, path: Path) -> DatasetManifest:
        self.register_processing(name, path, overwrite=True, source=path.name, builtin=True)
        return self.validate(name)


def _copy(src: BinaryIO, dst: BinaryIO, digest: "hashlib._Hash") -> None:
    while chunk := src.read(_COPY_CHUNK):
        digest.update(chunk)
        dst.write(chunk)


def check_datasets(
    names: builtins.list[str],
    family: ModelFamily | str,
    algorithm: Algorithm | str,
    home: str | os.PathLike | None = None,
    *,
    owner: int | None = None,
) -> tuple[builtins.list[DatasetManifest], builtins.list[ErrorItem]]:
    """Check a job spec's datasets: each must exist, be `ready`, and be in a format `algorithm` accepts.

    Returns the manifests of the datasets found (in spec order) and every problem at once, each located at
    `("datasets", i, "name")` with type `dataset_not_found`, `dataset_not_ready` or `dataset_format_mismatch`.
    A (family, algorithm) pair with no entry in ALGORITHM_FORMATS is the spec validator's to reject: no format
    check is made for it here. With `owner`, the names are that user's (their datasets, then the built-ins).
    """
    registry = DatasetRegistry(home, owner=owner)
    accepted = accepted_formats(family, algorithm)
    manifests: builtins.list[DatasetManifest] = []
    errors: builtins.list[ErrorItem] = []
    for i, name in enumerate(names):
        loc = ("datasets", i, "name")
        try:
            manifest = registry.get(name)
        except DatasetError as err:
            errors.append(ErrorItem(loc=loc, msg=str(err), type="dataset_not_found"))
            continue
        manifests.append(manifest)
        if manifest.state is DatasetState.PROCESSING:
            errors.append(
                ErrorItem(
                    loc=loc,
                    msg=f"dataset {name!r} is `processing`, not `ready`; wait until its validation ends "
                    "(`felix-train datasets list` shows its state)",
                    type="dataset_not_ready",
                )
            )
        elif manifest.state is DatasetState.FAILED:
            errors.append(
                ErrorItem(
                    loc=loc,
                    msg=f"dataset {name!r} is `failed`, not `ready`: {manifest.error}; fix the file and add it "
                    "again with overwrite",
                    type="dataset_not_ready",
                )
            )
        elif accepted and manifest.format not in accepted:
            errors.append(
                ErrorItem(
                    loc=loc,
                    msg=format_mismatch_message(manifest.format, family, algorithm, name=name),
                    type="dataset_format_mismatch",
                )
            )
    return manifests, errors
