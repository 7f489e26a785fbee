"""`Store`: the job store's one object, users, datasets, jobs and deployments over one engine."""

from __future__ import annotations

import os

from sqlalchemy import text

from felix_train.service.store.deployments import DeploymentQueries
from felix_train.service.store.migrate import upgrade_schema
from felix_train.service.store.schema import Base
from felix_train.service.store.users import UserQueries


class Store(UserQueries, DeploymentQueries):
    """Users, datasets, jobs and deployments over one SQLAlchemy engine (SQLite or PostgreSQL).

    Args:
        url: a SQLAlchemy URL (default `$FELIX_DATABASE_URL`, else SQLite at `$FELIX_HOME/felix.db`).
        home: `$FELIX_HOME`, for the default SQLite path.
        create: bring the schema up to date first (`create_all`); False for a second handle on a
            database another one already migrated.
        echo: log every SQL statement.
    """

    def __init__(self, url: str | None = None, *, home: str | os.PathLike | None = None, create: bool = True,
                 echo: bool = False):
        super().__init__(url, home=home, echo=echo)
        if create:
            self.create_all()

    def create_all(self) -> None:
        """Migrate the database to the code's schema (Alembic; an empty one gets every table).

        One process at a time: the API and workers may start together. Raises `SchemaTooNew`
        when a newer felix_train migrated the database.
        """
        upgrade_schema(self.engine)

    def drop_all(self) -> None:
        """Drop every table, Alembic's revision too (the next `create_all` starts from nothing)."""
        Base.metadata.drop_all(self.engine)
        with self.engine.execution_options(felix_write=True).begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
