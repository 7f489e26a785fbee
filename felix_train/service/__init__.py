"""The service layer: the job store, the worker that runs queued jobs, and the REST API.

- `store/`: the tables (`schema.py`), their Alembic migrations (`migrations/`, `felix-train db upgrade`,
  run on start by `serve` and `worker`), and the `Store`'s queries by concern (users and datasets, jobs,
  deployments); SQLite at `$FELIX_HOME/felix.db` by default, PostgreSQL through `FELIX_DATABASE_URL`;
  `felix-train users add NAME`.
- `worker/`: `felix-train worker` claims `requested` jobs and runs each in a child process (`runs.py`),
  and serves deployed models in inference processes (`deployments.py`).
- `api`: `felix-train serve`, the Felix training-jobs REST API (FastAPI).
- `serving/`: the predict contract the API shares (`protocol.py`), the predictors (`predictors.py`) and
  the inference process of a deployed job (`server.py`, `python -m felix_train.service.serving`),
  started by a worker; the API forwards `predict` to it over loopback.

Nothing here imports torch at import time: jobs run, and models are served, in child processes.
"""
