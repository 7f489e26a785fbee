"""Checkpoints with UUIDs: manifests, listing, retention, and resolving a UUID anywhere.

A trainer writes a checkpoint's files into a staging folder (`CheckpointManager.stage()`
or the library's own `checkpoint-N` folder), then `commit()` hashes them, writes
`checkpoint.json` and renames the folder to `checkpoints/<uuid>/` in one step, so a
reader never sees a half-written checkpoint. A run killed while it wrote one leaves its staging
folder behind (a full model's worth of files): `remove_stale_staging()`, called by the next run of
the job before it trains, removes them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid as uuidlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from felix_train.errors import CheckpointNotFound
from felix_train.events import EventType, append_event
from felix_train.jobs import JobFolder, atomic_write_json, felix_home, read_json, utcnow

MANIFEST = "checkpoint.json"

STAGING_PREFIX = "staging-"
"""`stage()` folders are `work/staging-<hex>`: what `remove_stale_staging` looks for."""


class CheckpointFile(BaseModel):
    path: str
    sha256: str
    size: int


class CheckpointManifest(BaseModel):
    """`checkpoint.json`: what a checkpoint is and how to check its files."""

    uuid: str
    job_id: str
    step: int
    epoch: float | None = None
    created_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    base_model: str = Field(description="The catalog id the weights derive from (never a UUID).")
    training_type: str
    training_algorithm: str = "sft"
    family: str
    files: list[CheckpointFile] = Field(default_factory=list)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _hash_tree(root: Path) -> list[CheckpointFile]:
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files.append(CheckpointFile(path=p.relative_to(root).as_posix(), sha256=sha256_file(p), size=p.stat().st_size))
    return files


class CheckpointManager:
    """One job's checkpoints."""

    def __init__(self, job: JobFolder, *, base_model: str, training_type: str, family: str,
                 training_algorithm: str = "sft", is_main: bool = True, keep_last: int = 2,
                 best_metric: str | None = None, greater_is_better: bool = True):
        self.job = job
        self.base_model = base_model
        self.training_type = training_type
        self.training_algorithm = training_algorithm
        self.family = family
        self.is_main = is_main
        self.keep_last = max(1, keep_last)
        self.best_metric = best_metric
        self.greater_is_better = greater_is_better
        self._staged: set[Path] = set()

    # -- writing -----------------------------------------------------------------
    def stage(self) -> Path:
        """A fresh empty folder on the same file system to write a checkpoint into (this process's own)."""
        path = self.job.work_dir / f"{STAGING_PREFIX}{uuidlib.uuid4().hex[:12]}"
        path.mkdir(parents=True, exist_ok=False)
        self._staged.add(path)
        return path

    def commit(self, staged: Path, *, step: int, epoch: float | None = None,
               metrics: dict[str, Any] | None = None) -> CheckpointManifest | None:
        """Turn a staged folder into `checkpoints/<uuid>/` with its manifest, apply retention, and append a
        `checkpoint_saved` event `{uuid, step, epoch, removed}` (`removed`: the UUIDs retention deleted).

        On a non-main rank nothing is committed and None is returned: the staged folder may be
        shared by every rank (HF's `checkpoint-N`), and rank 0 commits it. A folder this rank got
        from `stage()` is its own, and is removed.
        """
        staged = Path(staged)
        if not self.is_main:
            if staged in self._staged:
                self._staged.discard(staged)
                shutil.rmtree(staged, ignore_errors=True)
            return None
        self._staged.discard(staged)
        manifest = CheckpointManifest(
            uuid=str(uuidlib.uuid4()), job_id=self.job.id, step=int(step),
            epoch=None if epoch is None else round(float(epoch), 4), created_at=utcnow(),
            metrics={k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str)) or v is None},
            base_model=self.base_model, training_type=self.training_type,
            training_algorithm=self.training_algorithm, family=self.family, files=_hash_tree(staged),
        )
        atomic_write_json(staged / MANIFEST, manifest.model_dump(mode="json"))
        self.job.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.job.checkpoints_dir / manifest.uuid
        os.replace(staged, final)
        removed = self.apply_retention()
        append_event(self.job.root, EventType.CHECKPOINT_SAVED,
                     {"uuid": manifest.uuid, "step": manifest.step, "epoch": manifest.epoch, "removed": removed},
                     step=manifest.step)
        return manifest

    def remove_stale_staging(self, patterns: tuple[str, ...] = (f"{STAGING_PREFIX}*",)) -> list[Path]:
        """Remove the staging folders earlier runs left in `work/` (killed mid-write); returns those removed.

        Call it once at the start of a run, on the main rank, before anything is staged: one run owns
        the job folder at a time, so every staging folder but this manager's own is stale. `patterns`
        are globs under `work/` (a trainer may add its library's scratch, such as `hf/checkpoint-*`).
        """
        if not self.is_main or not self.job.work_dir.is_dir():
            return []
        removed = []
        for pattern in patterns:
            for path in sorted(self.job.work_dir.glob(pattern)):
                if path in self._staged or not path.is_dir() or path.is_symlink():
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def update_metrics(self, uuid: str, metrics: dict[str, Any]) -> None:
        """Merge metrics computed after the save (e.g. an eval at the same step) into a manifest."""
        if not self.is_main:
            return
        path = self.job.checkpoints_dir / uuid / MANIFEST
        data = read_json(path)
        if data is None:
            return
        data["metrics"].update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
        atomic_write_json(path, data)

    # -- reading -----------------------------------------------------------------
    def list(self) -> list[CheckpointManifest]:
        return list_checkpoints(self.job)

    def latest(self) -> CheckpointManifest | None:
        items = self.list()
        return items[-1] if items else None

    def best(self) -> CheckpointManifest | None:
        if not self.best_metric:
            return None
        scored = [m for m in self.list() if isinstance(m.metrics.get(self.best_metric), (int, float))]
        if not scored:
            return None
        sign = 1 if self.greater_is_better else -1
        # ties go to the latest checkpoint, so a flat metric does not pin an old one forever
        return max(scored, key=lambda m: (sign * m.metrics[self.best_metric], m.step))

    def path(self, manifest: CheckpointManifest | str) -> Path:
        uuid = manifest if isinstance(manifest, str) else manifest.uuid
        return self.job.checkpoints_dir / uuid

    def apply_retention(self) -> list[str]:
        """Keep the last `keep_last` checkpoints and the best one; delete the rest. Returns removed UUIDs."""
        if not self.is_main:
            return []
        items = self.list()
        keep = {m.uuid for m in items[-self.keep_last:]}
        best = self.best()
        if best is not None:
            keep.add(best.uuid)
        removed = []
        for m in items:
            if m.uuid not in keep:
                shutil.rmtree(self.path(m), ignore_errors=True)
                removed.append(m.uuid)
        return removed


def list_checkpoints(job: JobFolder) -> list[CheckpointManifest]:
    """Every committed checkpoint of a job, oldest step first."""
    out = []
    if job.checkpoints_dir.is_dir():
        for child in job.checkpoints_dir.iterdir():
            data = read_json(child / MANIFEST)
            if data:
                out.append(CheckpointManifest.model_validate(data))
    out.sort(key=lambda m: (m.step, m.created_at))
    return out


def find_checkpoint(uuid: str, home: str | os.PathLike | None = None) -> tuple[CheckpointManifest, Path]:
    """Resolve a checkpoint UUID anywhere under `$FELIX_HOME/jobs/*/checkpoints/`."""
    jobs_dir = felix_home(home) / "jobs"
    uuid = uuid.lower()
    if jobs_dir.is_dir():
        for job_dir in jobs_dir.iterdir():
            candidate = job_dir / "checkpoints" / uuid / MANIFEST
            data = read_json(candidate)
            if data:
                return CheckpointManifest.model_validate(data), candidate.parent
    raise CheckpointNotFound(
        f"unknown checkpoint {uuid!r}: no job under {jobs_dir} has it; "
        "`felix-train jobs checkpoints JOB_ID` lists a job's checkpoint UUIDs"
    )


def verify_checkpoint(path: Path) -> list[str]:
    """Files whose sha256 no longer matches the manifest (empty when intact)."""
    manifest = CheckpointManifest.model_validate(read_json(Path(path) / MANIFEST))
    bad = []
    for f in manifest.files:
        p = Path(path) / f.path
        if not p.exists() or sha256_file(p) != f.sha256:
            bad.append(f.path)
    return bad
