"""The per-deployment secret between the API (and the worker) and a job's inference process.

An inference process listens on loopback, where any local process can reach it. So each deployment
gets its own random secret, and the process refuses every request without it (401, `/health`
included):

- the worker makes it (`new_secret`) when it starts the process, writes it to
  `jobs/<id>/serving-<deployment_id>.secret` (mode 0600 from the start) and hands it to the process in
  its environment (`FELIX_SERVING_SECRET`), never on its command line (anyone can read
  `/proc/<pid>/cmdline`; `/proc/<pid>/environ` only the owner); the process takes it out of its
  environment at once;
- the API reads it for the deployment the store records (`read_deployment_secret`: an earlier
  deployment's file does not count) and sends it as `Authorization: Bearer <secret>`;
  the worker's health probe sends it too;
- the process compares it in constant time (`is_authorized`, `hmac.compare_digest`); the worker removes
  the file when the deployment ends (`remove_deployment_secret`).

Standard library only (the API imports this module).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

SECRET_ENV = "FELIX_SERVING_SECRET"
"""The environment variable that hands a deployment's secret to its inference process."""

SECRET_SUFFIX = ".secret"
"""A deployment's secret is `jobs/<id>/serving-<deployment_id>.secret` (mode 0600): `secret_path`."""

AUTH_HEADER = "Authorization"
MIN_SECRET_CHARS = 16
_DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def auth_headers(secret: str) -> dict[str, str]:
    """The header that carries `secret` to an inference process."""
    return {AUTH_HEADER: f"Bearer {secret}"}


def is_authorized(header: str | None, secret: str) -> bool:
    """Whether an `Authorization` header carries `secret` (`Bearer <secret>`), compared in constant time."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())


def secret_path(job_dir: Path, deployment_id: str) -> Path:
    """`jobs/<id>/serving-<deployment_id>.secret`: one file per deployment, so ending one never touches another's."""
    if not _DEPLOYMENT_ID.fullmatch(deployment_id or ""):
        raise ValueError(f"not a deployment id: {deployment_id!r}")
    return Path(job_dir) / f"serving-{deployment_id}{SECRET_SUFFIX}"


def write_deployment_secret(job_dir: Path, deployment_id: str, secret: str) -> Path:
    """Write `deployment_id`'s secret file, removing those of the job's earlier deployments (withdrawn ones, or
    left by a worker that was killed). The file is 0600 from the start (`mkstemp`), then renamed into place, so
    no reader sees it partial or readable by others."""
    path = secret_path(job_dir, deployment_id)
    for old in path.parent.glob(f"serving-*{SECRET_SUFFIX}"):
        old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".serving-", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read_deployment_secret(job_dir: Path, deployment_id: str | None) -> str | None:
    """`deployment_id`'s secret; None when it has none (no deployment, or its file is gone or unreadable)."""
    if not deployment_id or not _DEPLOYMENT_ID.fullmatch(deployment_id):
        return None
    try:
        secret = secret_path(job_dir, deployment_id).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return secret if len(secret) >= MIN_SECRET_CHARS else None


def remove_deployment_secret(job_dir: Path, deployment_id: str) -> None:
    """Remove `deployment_id`'s secret file (the deployment ended)."""
    secret_path(job_dir, deployment_id).unlink(missing_ok=True)
