"""The job store: users, datasets, jobs and deployments in SQL (SQLAlchemy 2 ORM).

One code path for two databases:

- SQLite, the embedded default, at `$FELIX_HOME/felix.db` (WAL, busy timeout; every
  write transaction starts with `BEGIN IMMEDIATE`, so two processes never deadlock on
  a lock upgrade). A worker claims a job with one conditional `UPDATE ... RETURNING`.
- PostgreSQL when many machines share the queue: `FELIX_DATABASE_URL=postgresql+psycopg://...`.
  A worker claims a job with `SELECT ... FOR UPDATE SKIP LOCKED`.

The package, by concern:

| module | |
|---|---|
| `schema.py` | the tables (ORM models) and column types |
| `migrations/`, `migrate.py` | Alembic migrations, run on start by `Store(...)` and by `felix-train db upgrade` |
| `engine.py`, `sessions.py` | where the database is, how to connect, read and write sessions |
| `users.py` | users (sha256-hashed API keys), datasets, rate limits |
| `jobs.py`, `deployments.py` | jobs (API and worker sides), deployments (on the job's row, fenced by `deployment_id`) |
| `cursor.py`, `spec_cache.py` | a job list's opaque cursor (keyset pagination); its specs, decoded once per process |
| `core.py` | `Store`, all of the above over one engine |
| `cli.py` | `felix-train users` and `felix-train db` |

The store raises domain errors (`JobNotFound`, `DatasetNotFound`, `Conflict`, `SchemaTooNew`, ...),
never HTTP ones: the API maps them once. Every function takes keyword arguments, and every read
of a user's resource is scoped by `owner_id`, so isolation is a property of the store.
"""

from __future__ import annotations

from felix_train.errors import JobNotFound
from felix_train.jobs import JobStatus, new_job_id
from felix_train.service.store.cli import db_main, users_main
from felix_train.service.store.core import Store
from felix_train.service.store.cursor import InvalidCursor, JobCursor
from felix_train.service.store.deployments import NO_DEPLOYMENT, ClaimedDeployment, DeploymentQueries
from felix_train.service.store.engine import DATABASE_URL_ENV, default_database_url, make_engine
from felix_train.service.store.errors import (
    Conflict,
    DatasetNotFound,
    NotFound,
    SchemaTooNew,
    StoreError,
    UserNotFound,
)
from felix_train.service.store.jobs import ClaimedJob, JobPage, JobQueries, JobRow, RunErrorCode
from felix_train.service.store.migrate import head_revision, schema_revision, upgrade_schema
from felix_train.service.store.schema import (
    Base,
    Dataset,
    Job,
    JobStatusType,
    JSONType,
    RateHit,
    User,
    UTCDateTime,
    utcnow,
)
from felix_train.service.store.users import API_KEY_PREFIX, USER_NAME_PATTERN, UserQueries, hash_api_key, new_api_key

__all__ = [
    "API_KEY_PREFIX", "DATABASE_URL_ENV", "NO_DEPLOYMENT", "USER_NAME_PATTERN", "Base", "ClaimedDeployment",
    "ClaimedJob", "Conflict", "Dataset", "DatasetNotFound", "DeploymentQueries", "InvalidCursor", "Job", "JobCursor",
    "JobNotFound", "JobPage", "JobQueries", "JobRow",
    "JobStatus", "JobStatusType", "JSONType", "NotFound", "RateHit", "RunErrorCode", "SchemaTooNew", "Store",
    "StoreError", "User", "UserNotFound", "UserQueries", "UTCDateTime", "db_main", "default_database_url",
    "hash_api_key", "head_revision", "make_engine", "new_api_key", "new_job_id", "schema_revision", "upgrade_schema",
    "users_main", "utcnow",
]
