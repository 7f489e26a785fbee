"""The API's settings: `class Settings(BaseSettings)`, read from `FELIX_*` environment variables.

Every field is also an environment variable with the `FELIX_` prefix (`FELIX_HOME`, `FELIX_DATABASE_URL`,
`FELIX_SECRET_KEY`, `FELIX_PUBLIC_URL`, `FELIX_RATE_LIMIT_PER_MINUTE`, ...); arguments given to
`Settings(...)` win over the environment, an empty variable counts as unset.

`private_sqlite_database(url)` creates the SQLite database file 0600 before a store opens it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from felix_train.jobs import felix_home


class Settings(BaseSettings):
    """How the API runs. `Settings.from_env(**overrides)` drops the overrides that are None."""

    model_config = SettingsConfigDict(env_prefix="FELIX_", env_ignore_empty=True, extra="ignore")

    home: Path = Field(default_factory=felix_home,
                       description="`$FELIX_HOME`: job folders, datasets, models, the SQLite store.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite at `$FELIX_HOME/felix.db`.")
    secret_key: str | None = Field(None, description="Signing key of download tokens; default `$FELIX_HOME/secret.key` "
                                   "(created once, shared by every API process on that home).")
    rate_limit_per_minute: int = Field(20, ge=1, description="Job submissions per user per minute.")
    download_ttl_s: int = Field(3600, ge=1, description="Lifetime of a download URL.")
    max_upload_bytes: int = Field(1 << 30, ge=1, description="Largest dataset upload.")
    max_body_bytes: int = Field(1 << 20, ge=1, description="Largest body of every other request (job specs, "
                                "predictions): a larger one is refused with 413 before it is read whole.")
    log_follow_poll_s: float = Field(0.5, gt=0, description="How often a followed log looks for new lines.")
    public_url: str | None = Field(None, description="Base URL for download links (default: the request's).")
    predict_timeout_s: float = Field(300.0, gt=0, description="How long a forwarded predict may take.")

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, value: Any) -> Path:
        return felix_home(value)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The environment's settings, with every override that is not None (`felix-train serve` flags)."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})


def private_sqlite_database(url: str) -> Path | None:
    """Make the SQLite database of `url` readable by its owner only (0600), before the store opens it.

    SQLite creates a missing database file with the process' umask (0644: every local user could read the
    key hashes and every spec); its `-wal` and `-shm` files take the database file's mode. So the file is
    created empty (a valid empty database) with mode 0600 first, and an existing one open to others is made
    0600 with its `-wal`/`-shm`. Returns the file, or None for a URL that is not an SQLite file.
    """
    parsed = make_url(url)
    name = parsed.database
    if not parsed.drivername.startswith("sqlite") or not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            pass
    return path
