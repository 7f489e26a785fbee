"""`/felix/training-jobs/{id}/download`: a URL with an expiring signed token (`tokens.py`) for the archive of
a `complete` job's `model/`, and the archive itself behind that URL (built once per job and format)."""

from __future__ import annotations

import os
import tarfile
import tempfile
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from felix_train.errors import JobNotFound
from felix_train.jobs import JobFolder, JobStatus
from felix_train.service.api.deps import CredentialsDep, CurrentUser, JobId, SecretDep, SettingsDep, StoreDep
from felix_train.service.api.schemas import DownloadPublic, FormatEnum
from felix_train.service.api.tokens import check_key_generation, make_download_token, read_download_token
from felix_train.service.store import Conflict, Job, Store, User

router = APIRouter(prefix="/felix/training-jobs", tags=["training jobs"])


def _downloadable(job: Job, folder: JobFolder) -> None:
    if job.status != JobStatus.COMPLETE:
        raise Conflict(f"job {job.id} is `{job.status.value}`; weights can be downloaded once it is `complete`")
    if not folder.model_dir.is_dir():
        raise Conflict(f"job {job.id} is complete but its `model/` folder is missing; train it again")


@router.get("/{job_id}/download", response_model=DownloadPublic,
            responses={409: {"description": "The job is not `complete`."}})
def get_training_job_download(job_id: JobId, request: Request, user: CurrentUser, store: StoreDep,
                              settings: SettingsDep, secret: SecretDep,
                              format: Annotated[FormatEnum, Query(description="zip or tar.gz")] = FormatEnum.ZIP,
                              ) -> DownloadPublic:
    """A URL for the trained weights (an archive of `model/`), valid for `download_ttl_s` seconds."""
    job = store.get_job(job_id=job_id, owner_id=user.id)
    _downloadable(job, JobFolder(job.id, settings.home))
    expires = time.time() + settings.download_ttl_s
    token = make_download_token(secret, job_id=job.id, user_id=user.id, fmt=format.value, expires_at=expires,
                                key_hash=user.key_hash)
    url = request.url_for("download_training_job_file", job_id=job.id).include_query_params(token=token)
    if settings.public_url:
        url = f"{settings.public_url.rstrip('/')}{url.path}?{url.query}"
    return DownloadPublic(url=str(url), expires_at=datetime.fromtimestamp(int(expires), timezone.utc),
                          format=format.value)


@router.get("/{job_id}/download/file", name="download_training_job_file", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}, "application/gzip": {}}},
                       404: {"description": "Unknown, tampered or another user's token."},
                       410: {"description": "The URL expired, or its owner rotated their API key since."}})
def download_training_job_file(job_id: JobId, store: StoreDep, settings: SettingsDep, secret: SecretDep,
                               token: Annotated[str, Query(max_length=2048)], credentials: CredentialsDep = None):
    """The archive behind a download URL. The signed token is the credential, until its owner rotates their API
    key; a sent API key must be its owner's."""
    claims = read_download_token(secret, token, job_id=job_id)
    owner = _user(store, claims["u"])
    if owner is None:
        raise JobNotFound(f"no job {job_id!r}")
    check_key_generation(claims, owner.key_hash, job_id=job_id)
    if credentials is not None:
        caller = store.user_by_api_key(api_key=credentials.credentials)
        if caller is None or caller.id != claims["u"]:
            raise JobNotFound(f"no job {job_id!r}")
    job = store.get_job(job_id=job_id, owner_id=claims["u"])
    folder = JobFolder(job.id, settings.home)
    _downloadable(job, folder)
    fmt = FormatEnum(claims.get("f", "zip"))
    media = "application/zip" if fmt == FormatEnum.ZIP else "application/gzip"
    return FileResponse(model_archive(folder, fmt), media_type=media, filename=f"{job.id}-model.{fmt.value}")


def _user(store: Store, user_id: int) -> User | None:
    """The user of that id (the store has no public lookup by id yet)."""
    with store.reading() as session:
        return session.get(User, user_id)


_archive_lock = threading.Lock()


def model_archive(folder: JobFolder, fmt: FormatEnum) -> Path:
    """The archive of `model/`, built once per job and format (atomically) and reused."""
    suffix = "zip" if fmt == FormatEnum.ZIP else "tar.gz"
    target = folder.root / ".download" / f"model.{suffix}"
    with _archive_lock:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            files = sorted(p for p in folder.model_dir.rglob("*") if p.is_file())
            if fmt == FormatEnum.ZIP:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                    for p in files:
                        zf.write(p, Path("model") / p.relative_to(folder.model_dir))
            else:
                with tarfile.open(tmp, "w:gz", compresslevel=1) as tf:
                    for p in files:
                        tf.add(p, arcname=str(Path("model") / p.relative_to(folder.model_dir)))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target
