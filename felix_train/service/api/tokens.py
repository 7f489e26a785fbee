"""Signed download tokens: the credential of a download URL (`itsdangerous`), and the key that signs them.

A token is `<payload>.<signature>`: the payload names the job, the user, the archive format, the expiry and
the generation of the user's API key (`{"j", "u", "f", "e", "k"}`, JSON, base64url), signed with HMAC-SHA256
under the API's secret key. `k` is a short digest of the API-key hash the user had when the URL was issued:
rotating the key (`felix-train users rotate NAME`) revokes every download URL handed out before.

The key is `FELIX_SECRET_KEY`, else `$FELIX_HOME/secret.key`, created once (0600, atomically) and shared by
every API process on that home.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from itsdangerous import BadData, Signer
from itsdangerous.encoding import base64_decode, base64_encode

from felix_train.errors import JobNotFound
from felix_train.service.api.config import Settings
from felix_train.service.api.errors import LinkExpired

_SALT = "felix-train.download"


def load_secret(settings: Settings) -> bytes:
    """The signing key: `settings.secret_key`, else `$FELIX_HOME/secret.key` (created on first use, 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.home / "secret.key"
    if not path.exists():
        _create_secret_file(path)
    _owner_only(path)
    text = path.read_text().strip()
    if not text:
        raise RuntimeError(f"{path} is empty; delete it and restart, or set FELIX_SECRET_KEY")
    return text.encode("utf-8")


def _create_secret_file(path: Path) -> None:
    """Write a new key to `path` unless another process did first. The key is written to a 0600 temporary file
    (`mkstemp`), then linked into place: no reader ever sees the file empty, partial, or readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".secret.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another process's key is already there
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def _owner_only(path: Path) -> None:
    """Make a key file of an older version (created 0644) private to its owner."""
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def key_generation(key_hash: str) -> str:
    """A short digest of a user's API-key hash: it changes when the key is rotated, and reveals nothing of it."""
    return hashlib.sha256(f"{_SALT}.key:{key_hash}".encode("utf-8")).hexdigest()[:16]


def _signer(secret: bytes) -> Signer:
    return Signer(secret, salt=_SALT, sep=".", digest_method=hashlib.sha256)


def make_download_token(secret: bytes, *, job_id: str, user_id: int, fmt: str, expires_at: float,
                        key_hash: str | None = None) -> str:
    """A token for `job_id`'s archive in format `fmt`, for `user_id` while their API key hashes to `key_hash`,
    valid until `expires_at` (epoch seconds). A token without `key_hash` is refused as revoked when fetched."""
    claims = {"j": job_id, "u": user_id, "f": fmt, "e": int(expires_at)}
    if key_hash is not None:
        claims["k"] = key_generation(key_hash)
    payload = base64_encode(json.dumps(claims, separators=(",", ":")))
    return _signer(secret).sign(payload).decode("ascii")


def read_download_token(secret: bytes, token: str, *, job_id: str, now: float | None = None) -> dict:
    """The token's claims if its signature is valid and it is for `job_id`.

    Raises:
        JobNotFound: malformed, tampered, or for another job (indistinguishable from no job).
        LinkExpired: genuine but past its expiry.
    """
    try:
        claims = json.loads(base64_decode(_signer(secret).unsign(token)))
        if claims["j"] != job_id or not isinstance(claims["u"], int) or not isinstance(claims["e"], int):
            raise ValueError("another job")
    except (BadData, ValueError, KeyError, TypeError, UnicodeError) as err:
        raise JobNotFound(f"no download for job {job_id!r} with this token; `GET /felix/training-jobs/"
                          f"{job_id}/download` gives a fresh URL") from err
    if (now or time.time()) >= claims["e"]:
        expired = datetime.fromtimestamp(claims["e"], timezone.utc).isoformat()
        raise LinkExpired(f"this download URL expired at {expired}; `GET /felix/training-jobs/{job_id}/download` "
                          "gives a fresh one")
    return claims


def check_key_generation(claims: dict, key_hash: str, *, job_id: str) -> None:
    """Refuse a token issued under an API key its owner has since rotated (or before tokens carried `k`).

    Raises:
        LinkExpired: the URL was revoked by a key rotation.
    """
    issued = claims.get("k")
    if not isinstance(issued, str) or not hmac.compare_digest(issued, key_generation(key_hash)):
        raise LinkExpired(f"this download URL was revoked: its owner's API key changed since it was issued; "
                          f"`GET /felix/training-jobs/{job_id}/download` with the current key gives a fresh one")
