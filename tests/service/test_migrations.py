"""Schema migrations (Alembic) on SQLite and PostgreSQL: an empty database, one made before Alembic, one made
by a newer felix_train."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from felix_train.cli import main as cli_main
from felix_train.jobs import JobStatus
from felix_train.service.store import (
    Base,
    SchemaTooNew,
    Store,
    db_main,
    hash_api_key,
    head_revision,
    make_engine,
    schema_revision,
)

# The tables as `Store.create_all` made them before Alembic (`Base.metadata.create_all`), frozen here:
# {serial}, {json}, {ts} and {false} are filled per database.
_TABLES_BEFORE_ALEMBIC = """
CREATE TABLE users (
    id {serial} NOT NULL, name VARCHAR(64) NOT NULL, key_hash VARCHAR(64) NOT NULL, created_at {ts} NOT NULL,
    PRIMARY KEY (id), UNIQUE (name));
CREATE UNIQUE INDEX ix_users_key_hash ON users (key_hash);
CREATE TABLE datasets (
    id {serial} NOT NULL, owner_id INTEGER NOT NULL, name VARCHAR(128) NOT NULL, state VARCHAR(16) NOT NULL,
    manifest {json}, created_at {ts} NOT NULL, updated_at {ts} NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_datasets_owner_name UNIQUE (owner_id, name),
    FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_datasets_owner_id ON datasets (owner_id);
CREATE TABLE jobs (
    id VARCHAR(64) NOT NULL, owner_id INTEGER NOT NULL, name VARCHAR(128) NOT NULL, project_id VARCHAR(128),
    spec {json} NOT NULL, status VARCHAR(16) NOT NULL, created_at {ts} NOT NULL, updated_at {ts} NOT NULL,
    started_at {ts}, finished_at {ts}, progress {json}, error {json}, metrics {json}, worker_id VARCHAR(128),
    heartbeat_at {ts}, stop_requested BOOLEAN NOT NULL, attempts INTEGER NOT NULL,
    {deployment_columns}
    PRIMARY KEY (id), FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_jobs_worker_id ON jobs (worker_id);
CREATE INDEX ix_jobs_status_created ON jobs (status, created_at);
CREATE INDEX ix_jobs_owner_created ON jobs (owner_id, created_at);
CREATE INDEX ix_jobs_project_id ON jobs (project_id);
CREATE TABLE rate_hits (
    id {serial} NOT NULL, user_id INTEGER NOT NULL, "key" VARCHAR(64) NOT NULL, at FLOAT NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_rate_hits_user_key_at ON rate_hits (user_id, "key", at);
"""

_DEPLOYMENT_COLUMNS = """deploy_requested BOOLEAN DEFAULT {false} NOT NULL, deployment_id VARCHAR(36),
    serving_worker VARCHAR(128), serving_pid INTEGER, serving_port INTEGER, serving_heartbeat_at {ts},"""

_ROWS = [
    "INSERT INTO users (id, name, key_hash, created_at) VALUES (1, 'alice', :key_hash, '2024-05-01 10:00:00')",
    "INSERT INTO datasets (owner_id, name, state, manifest, created_at, updated_at) VALUES "
    "(1, 'ner', 'ready', '{\"num_records\": 3}', '2024-05-01 10:00:00', '2024-05-01 10:00:00')",
    "INSERT INTO jobs (id, owner_id, name, spec, status, created_at, updated_at, finished_at, metrics, "
    "stop_requested, attempts) VALUES ('job-old', 1, 'first', '{\"base_model\": \"felix/tiny-gliner2\"}', "
    "'complete', '2024-05-01 10:00:00', '2024-05-01 11:00:00', '2024-05-01 11:00:00', '{\"eval_f1\": 0.5}', "
    "false, 1)",
    "INSERT INTO rate_hits (user_id, \"key\", at) VALUES (1, 'create_job', 1000.0)",
]


def _make_old_database(url: str, *, with_deployments: bool) -> None:
    """A database as the store made it before Alembic, with a user, a dataset, a complete job and a rate hit."""
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    types = {"serial": "INTEGER" if sqlite else "SERIAL", "json": "JSON" if sqlite else "JSONB",
             "ts": "DATETIME" if sqlite else "TIMESTAMP WITH TIME ZONE", "false": "0" if sqlite else "false"}
    ddl = _TABLES_BEFORE_ALEMBIC.replace(
        "{deployment_columns}", _DEPLOYMENT_COLUMNS.format(**types) if with_deployments else "").format(**types)
    try:
        with engine.execution_options(felix_write=True).begin() as conn:
            for statement in filter(str.strip, ddl.split(";")):
                conn.exec_driver_sql(statement)
            for statement in _ROWS:
                conn.execute(text(statement), {"key_hash": hash_api_key("felix_old-key")})
            if not sqlite:  # rows inserted with explicit ids: move the sequence past them
                conn.exec_driver_sql("SELECT setval('users_id_seq', 1)")
    finally:
        engine.dispose()


def _make_newer_database(url: str, home) -> None:  # noqa: ANN001
    """A database migrated by a future felix_train: at a revision this code does not know."""
    Store(url, home=home).close()
    engine = make_engine(url)
    with engine.execution_options(felix_write=True).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()


def _schema_diff(store: Store) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_an_empty_database_gets_the_models_schema(db_url, felix_home):
    store = Store(db_url, home=felix_home)
    try:
        assert schema_revision(store.engine) == head_revision()
        assert _schema_diff(store) == []
        user, _ = store.create_user(name="a")
        job = store.create_job(owner_id=user.id, name="j", spec={})
        assert store.get_job(job_id=job.id).deploy_requested is False
    finally:
        store.close()


@pytest.mark.parametrize("with_deployments", [True, False], ids=["todays-create-all", "before-deployments"])
def test_a_database_made_before_alembic_upgrades_and_keeps_its_rows(db_url, felix_home, with_deployments):
    _make_old_database(db_url, with_deployments=with_deployments)
    store = Store(db_url, home=felix_home)
    try:
        assert schema_revision(store.engine) == head_revision()
        assert _schema_diff(store) == []
        assert store.user_by_api_key(api_key="felix_old-key").name == "alice"
        assert store.get_dataset(owner_id=1, name="ner").manifest == {"num_records": 3}
        job = store.get_job(job_id="job-old", owner_id=1)
        assert job.status is JobStatus.COMPLETE and job.spec == {"base_model": "felix/tiny-gliner2"}
        assert job.metrics == {"eval_f1": 0.5} and job.created_at.tzinfo is not None
        assert job.deploy_requested is False and job.deployment_id is None
        assert store.hit_rate_limit(user_id=1, key="create_job", limit=1, window_s=60, now=1010.0) == pytest.approx(50)
        # the old rows work with today's queries: a deployment on the old job, a new user beside the old one
        assert store.request_deploy(job_id="job-old", owner_id=1).deploy_requested is True
        assert store.claim_deployment(worker_id="w").job_id == "job-old"
        assert store.create_user(name="bob")[0].id == 2
    finally:
        store.close()


def test_a_database_newer_than_the_code_is_refused(db_url, felix_home, capsys):
    _make_newer_database(db_url, felix_home)
    with pytest.raises(SchemaTooNew, match="revision '9999_from_the_future'.*newer felix_train.*pip install -U"):
        Store(db_url, home=felix_home)
    for action in ("upgrade", "current"):
        assert db_main(["--database-url", db_url, action]) == 1
        assert "newer felix_train" in capsys.readouterr().err
    store = Store(db_url, home=felix_home, create=False)  # untouched
    try:
        assert schema_revision(store.engine) == "9999_from_the_future"
    finally:
        store.close()


def test_db_verb_upgrades_and_reports(db_url, felix_home, capsys):
    assert cli_main(["db", "current", "--database-url", db_url]) == 0
    assert "revision none" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--database-url", db_url]) == 0
    assert f"upgraded from no revision to {head_revision()} (head)" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--database-url", db_url]) == 0
    assert "already at revision" in capsys.readouterr().out
    assert cli_main(["db", "current", "--database-url", db_url]) == 0
    assert f"revision {head_revision()} (head)" in capsys.readouterr().out


def test_processes_starting_together_migrate_once(db_url, felix_home):
    """API and workers may start at once on an empty database: each Store waits its turn, none fails."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Store(db_url, home=felix_home).close()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = Store(db_url, home=felix_home, create=False)
    try:
        assert schema_revision(store.engine) == head_revision()
    finally:
        store.close()


def test_worker_refuses_a_newer_database(db_url, felix_home, capsys):
    from felix_train.service.worker import main as worker_main

    _make_newer_database(db_url, felix_home)
    assert worker_main(["--home", str(felix_home), "--database-url", db_url]) == 1
    assert "newer felix_train" in capsys.readouterr().err


def test_0003_adds_the_job_query_indexes_and_keeps_rows(db_url, felix_home):
    """A database at 0002 with jobs gets the indexes the job queries need; its rows stay; 0003 downgrades too."""
    from alembic import command
    from sqlalchemy import inspect

    from felix_train.service.store.migrate import alembic_config

    engine = make_engine(db_url)
    try:
        with engine.execution_options(felix_write=True).begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
        assert schema_revision(engine) == "0002"
        with engine.execution_options(felix_write=True).begin() as conn:
            for statement in _ROWS:
                conn.execute(text(statement), {"key_hash": hash_api_key("felix_old-key")})
    finally:
        engine.dispose()
    store = Store(db_url, home=felix_home)
    try:
        assert schema_revision(store.engine) == head_revision() and _schema_diff(store) == []
        indexes = {ix["name"]: ix["column_names"] for ix in inspect(store.engine).get_indexes("jobs")}
        assert indexes["ix_jobs_owner_status_created_id"] == ["owner_id", "status", "created_at", "id"]
        assert indexes["ix_jobs_owner_project_created_id"] == ["owner_id", "project_id", "created_at", "id"]
        assert indexes["ix_jobs_status_created_id"] == ["status", "created_at", "id"]
        assert "ix_jobs_status_created" not in indexes and "ix_jobs_project_id" not in indexes
        rows, count = store.list_jobs(owner_id=1, status=JobStatus.COMPLETE)
        assert count == 1 and rows[0].id == "job-old" and rows[0].metrics == {"eval_f1": 0.5}
        with store.engine.execution_options(felix_write=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0002")
        assert "ix_jobs_status_created" in {ix["name"] for ix in inspect(store.engine).get_indexes("jobs")}
        store.create_all()  # and up again
        assert _schema_diff(store) == [] and store.get_job(job_id="job-old").status is JobStatus.COMPLETE
    finally:
        store.close()


def test_job_queries_read_their_index_in_order_on_sqlite(felix_home):
    """Each list query and the claim is one index range read in the ORDER BY's order: no scan, no sort."""
    from sqlalchemy import func, select

    from felix_train.service.store import Job

    store = Store(home=felix_home)
    try:
        page = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(20).offset(40)
        cases = {
            "ix_jobs_owner_created_id": page.where(Job.owner_id == 1),
            "ix_jobs_owner_status_created_id": page.where(Job.owner_id == 1, Job.status == JobStatus.FAILED),
            "ix_jobs_owner_project_created_id": page.where(Job.owner_id == 1, Job.project_id == "p"),
            "ix_jobs_status_created_id": select(Job.id).where(Job.status == JobStatus.REQUESTED)
            .order_by(Job.created_at, Job.id).limit(1),
        }
        with store.engine.connect() as conn:
            for index, query in cases.items():
                sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
                plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
                assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
            count = select(func.count()).select_from(Job).where(Job.owner_id == 1, Job.status == JobStatus.FAILED)
            sql = str(count.compile(store.engine, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "COVERING INDEX ix_jobs_owner_status_created_id" in plan, plan
    finally:
        store.close()
