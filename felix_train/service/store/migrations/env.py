"""Alembic's environment for the store's migrations (run by `felix_train.service.store.migrate`).

`upgrade_schema` hands over a connection inside its own transaction (which holds the schema
lock); the migrations run in it and it commits them. Run by Alembic's own CLI instead
(`sqlalchemy.url` set), this opens an engine the way the store does.
"""

from alembic import context

from felix_train.service.store.engine import default_database_url, make_engine
from felix_train.service.store.schema import Base

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or default_database_url())
    with engine.execution_options(felix_write=True).connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
