"""The app factory `create_app(settings)`, the one mapping of domain errors to HTTP answers, and
`felix-train serve` (`main`)."""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from felix_train import __version__
from felix_train.data.registry import DatasetRegistry
from felix_train.errors import DatasetError, JobNotFound, SpecError
from felix_train.service.api.body import install_body_handling
from felix_train.service.api.config import Settings, private_sqlite_database
from felix_train.service.api.errors import (
    LinkExpired,
    NotAuthenticated,
    PayloadTooLarge,
    RateLimited,
    ServingUnavailable,
)
from felix_train.service.api.routes import datasets, deployments, downloads, estimate, events, jobs, metrics, models
from felix_train.service.api.tokens import load_secret
from felix_train.service.serving import PredictInputError
from felix_train.service.store import Conflict, NotFound, Store, default_database_url

DESCRIPTION = ("Fine-tune GLiNER2 encoders and decoder LLMs: submit a job spec, follow its logs, download the "
               "trained weights. Authenticate with `Authorization: Bearer <API key>`.")


def _detail(exc: Exception) -> dict:
    return {"detail": str(exc)}


def _located(exc: SpecError) -> dict:
    return {"detail": [{"loc": ["body", *e.loc], "msg": e.msg, "type": e.type} for e in exc.errors]}


ERROR_ANSWERS: dict[type[Exception], tuple[int, Callable[[Exception], dict], Callable[[Exception], dict]]] = {
    # error: (status, body, headers)
    NotAuthenticated: (401, _detail, lambda exc: {"WWW-Authenticate": "Bearer"}),
    JobNotFound: (404, _detail, lambda exc: {}),
    NotFound: (404, _detail, lambda exc: {}),
    Conflict: (409, _detail, lambda exc: {}),
    LinkExpired: (410, _detail, lambda exc: {}),
    PayloadTooLarge: (413, _detail, lambda exc: {}),
    PredictInputError: (422, lambda exc: {"detail": exc.to_list()}, lambda exc: {}),
    SpecError: (422, _located, lambda exc: {}),
    DatasetError: (422, _detail, lambda exc: {}),
    RateLimited: (429, _detail, lambda exc: {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}),
    ServingUnavailable: (503, _detail, lambda exc: {"Retry-After": "1"}),
}
"""Every domain error the routes raise, and its HTTP answer: status, JSON body, headers."""


def install_handlers(app: FastAPI) -> None:
    """One exception handler per entry of ERROR_ANSWERS."""
    for error, (status, body, headers) in ERROR_ANSWERS.items():
        async def handler(request: Request, exc: Exception, status=status, body=body, headers=headers):
            return JSONResponse(body(exc), status_code=status, headers=headers(exc) or None)

        app.add_exception_handler(error, handler)


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The API over `settings.home` and the store at `settings.database_url` (or the given `store`)."""
    settings = settings or Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    own_store = store is None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = threading.Thread(target=datasets.revalidate_processing, args=(app.state.store, app.state.registry),
                                  name="felix-dataset-revalidate", daemon=True)
        thread.start()
        yield
        if own_store:
            app.state.store.close()

    app = FastAPI(title="Felix training jobs", version=__version__, lifespan=lifespan, description=DESCRIPTION)
    app.state.settings = settings
    if own_store:
        private_sqlite_database(settings.database_url or default_database_url(settings.home))
    app.state.store = store or Store(settings.database_url, home=settings.home)
    app.state.registry = DatasetRegistry(settings.home)
    app.state.secret = load_secret(settings)
    for module in (estimate, jobs, events, metrics, downloads, deployments, models, datasets):  # estimate before jobs/{id}
        app.include_router(module.router)
    install_handlers(app)
    install_body_handling(app, settings)
    return app


def main(argv: list[str] | None = None) -> int:
    """`felix-train serve`: run the API under uvicorn."""
    p = argparse.ArgumentParser(prog="felix-train serve", description="Serve the Felix training-jobs REST API "
                                "(OpenAPI docs at /docs).")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--home", default=None, help="$FELIX_HOME (default ~/.felix)")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL (default $FELIX_DATABASE_URL, else SQLite at $FELIX_HOME/felix.db)")
    p.add_argument("--public-url", default=None, help="base URL for download links (default: the request's)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)

    import uvicorn

    settings = Settings.from_env(home=args.home, database_url=args.database_url, public_url=args.public_url)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
