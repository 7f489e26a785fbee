"""Serving a deployed job: the predict contract the API shares, the predictors, and the inference process.

| module | |
|---|---|
| `auth.py` | the per-deployment secret: made by the worker, sent by the API, required by the process (401 without it); standard library only |
| `protocol.py` | request models (`GLiNER2PredictRequest`, `LLMPredictRequest`), `parse_predict_request`, `job_family`, loopback `get_json`/`post_json`; pydantic and the standard library only (the API imports it) |
| `predictors.py` | `GLiNER2Predictor`, `LLMPredictor`, `load_predictor`: a job's `model/` loaded once (torch inside) |
| `server.py` | the process: `create_serving_app` (`GET /health`, `POST /predict`) and `main` |

`python -m felix_train.service.serving --job-dir $FELIX_HOME/jobs/<id> --port 0` runs the process;
a worker starts one per deployed job (`felix_train.service.worker`), with the deployment's secret in
`FELIX_SERVING_SECRET` (never on the command line). Importing this package loads
neither torch nor fastapi.
"""

from __future__ import annotations

from felix_train.service.serving.auth import (
    SECRET_ENV,
    auth_headers,
    is_authorized,
    new_secret,
    read_deployment_secret,
    remove_deployment_secret,
    write_deployment_secret,
)
from felix_train.service.serving.predictors import GLiNER2Predictor, LLMPredictor, load_predictor
from felix_train.service.serving.protocol import (
    JOB_HEADER,
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    REQUEST_MODELS,
    SERVING_FILE,
    SERVING_HOST,
    SERVING_LOG,
    ChatMessage,
    GLiNER2PredictRequest,
    LLMPredictRequest,
    PredictInputError,
    get_json,
    job_family,
    parse_predict_request,
    post_json,
    request_json,
)
from felix_train.service.serving.server import build_parser, create_serving_app, main

__all__ = [
    "SECRET_ENV", "auth_headers", "is_authorized", "new_secret", "read_deployment_secret", "remove_deployment_secret",
    "write_deployment_secret",
    "JOB_HEADER", "MAX_TEXTS", "MAX_TEXT_CHARS", "REQUEST_MODELS", "SERVING_FILE", "SERVING_HOST", "SERVING_LOG",
    "ChatMessage", "GLiNER2PredictRequest", "GLiNER2Predictor", "LLMPredictRequest", "LLMPredictor",
    "PredictInputError", "build_parser", "create_serving_app", "get_json", "job_family", "load_predictor", "main",
    "parse_predict_request", "post_json", "request_json",
]
