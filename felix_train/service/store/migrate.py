"""Schema migrations with Alembic, shipped in the package (`migrations/`) and run programmatically.

`upgrade_schema(engine)` brings a database to the code's schema (`head`): an empty database gets
every table, a database made before Alembic (by the old `create_all`, with or without the
deployment columns) is brought up to date and stamped, and a database already at `head` costs
one read. Processes that start together take turns (PostgreSQL: an advisory lock; SQLite:
`BEGIN IMMEDIATE`). A database whose revision this code does not know was migrated by a newer
felix_train: it is refused (`SchemaTooNew`), never downgraded or written.

`felix-train db upgrade` runs it; so does every `Store(...)` (the API's `serve`, the `worker`,
`users`), unless built with `create=False`. A new migration goes in `migrations/versions/`
beside a change of `schema.py`; `tests/service/test_migrations.py` checks that both agree.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from felix_train.service.store.errors import SchemaTooNew

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

_LOCK_ID = 7215
"""The PostgreSQL advisory lock that serialises schema changes (the same one `create_all` took before Alembic)."""


def alembic_config(connection: Connection | None = None):
    """An Alembic `Config` for the packaged migrations, running on `connection` (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _revisions() -> tuple[str, frozenset[str]]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return scripts.get_current_head(), frozenset(s.revision for s in scripts.walk_revisions())


def head_revision() -> str:
    """The newest revision this code knows (what `upgrade_schema` brings a database to)."""
    return _revisions()[0]


def current_revision(conn: Connection) -> str | None:
    """The database's revision (None: never migrated: empty, or made before Alembic)."""
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


def refuse_unknown(revision: str | None, engine: Engine) -> None:
    """Raise `SchemaTooNew` when `revision` is not one of this code's (a newer felix_train's)."""
    head, known = _revisions()
    if revision is not None and revision not in known:
        from felix_train import __version__

        raise SchemaTooNew(
            f"the database {engine.url.render_as_string(hide_password=True)} is at schema revision {revision!r}, "
            f"which felix_train {__version__} does not know (its newest is {head!r}): a newer felix_train migrated "
            "it. Upgrade felix_train here to the version that did (`pip install -U felix-train`), or point "
            "--database-url / FELIX_DATABASE_URL at another database")


def schema_revision(engine: Engine) -> str | None:
    """The database's revision, read without a write lock."""
    with engine.connect() as conn:
        return current_revision(conn)


def upgrade_schema(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database of `engine` to `head`; returns (revision before, revision after).

    Raises:
        SchemaTooNew: the database is at a revision this code does not know (a newer felix_train's).
    """
    before = schema_revision(engine)
    refuse_unknown(before, engine)
    head = head_revision()
    if before == head:
        return before, head
    with engine.execution_options(felix_write=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))
        before = current_revision(conn)  # another process may have migrated it meanwhile
        refuse_unknown(before, engine)
        if before != head:
            from alembic import command

            command.upgrade(alembic_config(conn), "head")
    return before, head
