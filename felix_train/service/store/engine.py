"""Where the store's database is and how to connect to it (SQLite pragmas, PostgreSQL pool).

SQLite, the embedded default, lives at `$FELIX_HOME/felix.db` (WAL, busy timeout; every write
transaction starts with `BEGIN IMMEDIATE`, so two processes never deadlock on a lock upgrade).
PostgreSQL is named by `FELIX_DATABASE_URL=postgresql+psycopg://...`.

The SQLite file holds API-key hashes and every spec: it is created 0600 before SQLAlchemy opens
it (SQLite gives its `-wal` and `-shm` files the database's mode), and an existing one of ours that
others can read is narrowed to 0600 (`private_database_file`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from felix_train.jobs import felix_home

DATABASE_URL_ENV = "FELIX_DATABASE_URL"


def default_database_url(home: str | os.PathLike | None = None) -> str:
    """`FELIX_DATABASE_URL`, else SQLite at `$FELIX_HOME/felix.db`."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{felix_home(home) / 'felix.db'}"


DATABASE_MODE = 0o600
"""The SQLite database file's mode: only its owner (the API's and the workers' user) reads it."""


def private_database_file(path: str | os.PathLike) -> None:
    """Create the SQLite file `path` with mode 0600, or narrow an existing one we own (and its -wal/-shm) to 0600.

    A file owned by another user is left as it is (we could not change it; its owner decides).
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATABASE_MODE))
    except FileExistsError:
        pass
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~DATABASE_MODE:
            os.chmod(candidate, DATABASE_MODE)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for `url`; on SQLite, connections set WAL and a write transaction begins IMMEDIATE.

    A write is a connection or session with the execution option `felix_write=True`.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            private_database_file(path.split("?", 1)[0])
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            # A write transaction takes the write lock up front: no read-to-write upgrade, which SQLite
            # cannot wait for (it fails at once with "database is locked").
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("felix_write") else "BEGIN")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)
