"""The engine and the two kinds of session every query of the store runs in.

`reading()` is a plain session; `writing()` is a transaction that, on SQLite, begins with
`BEGIN IMMEDIATE` (see `engine.py`), so a write never waits on a lock upgrade.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from felix_train.service.store.engine import default_database_url, make_engine


class StoreBase:
    """One SQLAlchemy engine (SQLite or PostgreSQL) and its read and write sessions."""

    def __init__(self, url: str | None = None, *, home: str | os.PathLike | None = None, echo: bool = False):
        self.url = url or default_database_url(home)
        self.engine = make_engine(self.url, echo=echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # Reads begin deferred; writes begin IMMEDIATE on SQLite (see make_engine).
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(felix_write=True), expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session
