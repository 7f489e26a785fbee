"""The Felix training-jobs REST API (FastAPI): `create_app(settings)`, `felix-train serve`.

Every endpoint of DESIGN.md's table, plus the datasets a job trains on:

| endpoint | |
|---|---|
| `POST /felix/training-jobs` | validate a spec (422 with field-level errors), create the job `requested`; 20/min/user |
| `GET /felix/training-jobs` | the user's jobs; filters `status`, `project_id`; `limit` 1-200 (200), `offset` (0) |
| `GET /felix/training-jobs/{id}` | status, configuration, progress; `metrics` only when `complete` |
| `GET /felix/training-jobs/{id}/logs` | train.log whole, or `?follow=true` streamed until the job ends |
| `GET /felix/training-jobs/{id}/checkpoints` | every checkpoint with its UUID (a valid `base_model`) |
| `GET /felix/training-jobs/{id}/download` | 409 unless `complete`; a URL with an expiring signed token |
| `GET /felix/training-jobs/{id}/download/file?token=` | the zip (or tar.gz) of `model/` |
| `POST /felix/training-jobs/{id}/stop` | graceful stop of a `running` job (then `cancelled`); else 409 |
| `POST /felix/training-jobs/{id}/deploy` | serve a `complete` job's model (else 409); `deployed` once healthy |
| `POST /felix/training-jobs/{id}/undeploy` | stop serving it: `complete` again (409 unless deployed or pending) |
| `DELETE /felix/training-jobs/{id}` | job, checkpoints, logs and files removed (a deployment stops) |
| `GET /felix/trained-models` | every `complete` or `deployed` model of the user |
| `POST /felix/trained-models/{id}/predict` | inference on a `deployed` model (409 otherwise; 422 names the field) |
| `GET /base-models` | the catalog |
| `POST /felix/datasets` | multipart upload; validated in the background: `processing` → `ready`/`failed` |
| `GET /felix/datasets`, `GET/DELETE /felix/datasets/{name}` | the user's datasets (and the built-ins) |

A failed job's `error` is `{code, message, param}`: `code` one of `felix_train.jobs.ErrorCode` (stable),
`param` the first spec field at fault; tracebacks and source locations stay in the job's log.

Auth is a bearer API key (`felix-train users add NAME`). Every resource belongs to a
user: another user's job id, dataset name, checkpoint UUID, download token or log
stream answers 404, exactly like one that does not exist.

Datasets are per user: each user's live in their own namespace of the registry
(`$FELIX_HOME/datasets/_users/<user id>/<name>/`) under the names they gave them, and a
job's spec carries `engine.dataset_owner`, so the API stores and answers the user's names
unchanged and the runner finds the same files. Built-in datasets are visible to every user
(a user's own dataset of the same name wins).

The layout, after FastAPI's full-stack template:

```
config.py       Settings (pydantic-settings, FELIX_* variables); the SQLite file created 0600
body.py         request bodies: the size limit (413), where an unparsable body breaks (422)
deps.py         typed dependencies: settings, store, registry, current user, rate limit
errors.py       the API's own errors (mapped to HTTP once, in app.py)
schemas.py      *Create / *Public / *sPublic(data, count) models
submission.py   a submitted spec -> a `requested` job, or its errors in the user's words
tokens.py       signed download tokens (itsdangerous), bound to the owner's API-key generation
app.py          create_app, the error -> HTTP table, `felix-train serve`
routes/         jobs, downloads, deployments (deploy, trained models, predict), models, datasets
```

The API only reads job folders and the store; jobs run and models are served in worker
processes, so this package never imports torch.
"""

from felix_train.service.api.app import create_app, main
from felix_train.service.api.config import Settings
from felix_train.service.api.tokens import make_download_token, read_download_token

__all__ = ["Settings", "create_app", "main", "make_download_token", "read_download_token"]
