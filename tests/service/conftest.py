"""Service fixtures: a store on SQLite (always) and PostgreSQL (when `FELIX_TEST_POSTGRES_URL` is set).

Each PostgreSQL test gets its own schema (dropped afterwards), so tests never see each
other's rows. `eval "$(bash scripts/ci_postgres.sh)"` starts a local server and sets the URL.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest

from felix_train.service.store import Store

POSTGRES_ENV = "FELIX_TEST_POSTGRES_URL"


def _postgres_schema_url(base: str):
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    return url, admin, schema


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch):
    """Tests name their database; a `FELIX_DATABASE_URL` in the environment must not redirect them."""
    monkeypatch.delenv("FELIX_DATABASE_URL", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, felix_home) -> str:
    """A fresh database URL: SQLite in the test's $FELIX_HOME, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{felix_home / 'felix.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set; `eval \"$(bash scripts/ci_postgres.sh)\"` starts a local PostgreSQL")
    from sqlalchemy import text

    url, admin, schema = _postgres_schema_url(base)
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(db_url, felix_home) -> Store:
    s = Store(db_url, home=felix_home)
    yield s
    s.close()
