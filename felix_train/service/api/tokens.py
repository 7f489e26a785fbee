"""Signed download tokens: the credential of a download URL (`itsdangerous`).

A token is `<payload>.<signature>`: the payload names the job, the user, the archive format and the expiry
(`{"j", "u", "f", "e"}`, JSON, base64url), signed with HMAC-SHA256 under the API's secret key. The key is
`FELIX_SECRET_KEY`, else `$FELIX_HOME/secret.key`, created once and shared by every API process on that home.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from datetime import datetime, timezone

from itsdangerous import BadData, Signer
from itsdangerous.encoding import base64_decode, base64_encode

from felix_train.errors import JobNotFound
from felix_train.service.api.config import Settings
from felix_train.service.api.errors import LinkExpired

_SALT = "felix-train.download"


def load_secret(settings: Settings) -> bytes:
    """The signing key: `settings.secret_key`, else `$FELIX_HOME/secret.key` (created on first use)."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.home / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
    for _ in range(50):  # another process may be writing it this instant
        text = path.read_text().strip()
        if text:
            return text.encode("utf-8")
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it and restart, or set FELIX_SECRET_KEY")


def _signer(secret: bytes) -> Signer:
    return Signer(secret, salt=_SALT, sep=".", digest_method=hashlib.sha256)


def make_download_token(secret: bytes, *, job_id: str, user_id: int, fmt: str, expires_at: float) -> str:
    """A token for `job_id`'s archive in format `fmt`, for `user_id`, valid until `expires_at` (epoch seconds)."""
    claims = {"j": job_id, "u": user_id, "f": fmt, "e": int(expires_at)}
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
