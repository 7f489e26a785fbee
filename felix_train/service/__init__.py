"""The service layer: the job store, the worker that runs queued jobs, and the REST API.

- `store`: SQLAlchemy 2 models and the `Store` (SQLite at `$FELIX_HOME/felix.db` by default,
  PostgreSQL through `FELIX_DATABASE_URL`); `felix-train users add NAME`.
- `worker`: `felix-train worker` claims `requested` jobs and runs each in a child process.
- `api`: `felix-train serve`, the Felix training-jobs REST API (FastAPI).
- `serving`: the inference process of a deployed job (`python -m felix_train.service.serving`), started
  by a worker; the API forwards `predict` to it over loopback. It shares its request models with the API.

Nothing here imports torch at import time: jobs run, and models are served, in child processes.
"""
