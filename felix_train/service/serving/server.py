"""The inference process of a deployed job: one loaded predictor behind `GET /health` and `POST /predict`.

    python -m felix_train.service.serving --job-dir $FELIX_HOME/jobs/<id> --port P [--host 127.0.0.1]

A worker starts one per deployed job (`felix_train.service.worker`), with the deployment's secret in
`FELIX_SERVING_SECRET` (`auth.py`; the process refuses to start without one). It loads the job's
`model/` once, warms it up, binds `--host:--port` (`--port 0`: any free port), writes
`serving.json` (`{pid, host, port, job_id, family, started_at}`) into the job folder, and serves

| endpoint | |
|---|---|
| `GET /health` | `{"status": "ok", "job_id", "family", "device", ...}` once the model is loaded (no filesystem path) |
| `POST /predict` | one prediction (bodies in `protocol.py`); 422 names the offending field |

Every request must carry the secret (`Authorization: Bearer <secret>`): without it, 401.

Requests are served one at a time (the model runs under a lock); a batch of texts is one request.
fastapi and uvicorn are imported when the server is built, torch when the model loads.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from felix_train.errors import FelixError
from felix_train.jobs import atomic_write_json, read_json, utcnow
from felix_train.service.serving.auth import AUTH_HEADER, MIN_SECRET_CHARS, SECRET_ENV, is_authorized
from felix_train.service.serving.predictors import load_predictor
from felix_train.service.serving.protocol import SERVING_FILE, SERVING_HOST, PredictInputError, parse_predict_request

log = logging.getLogger("felix_train.serving")

def create_serving_app(predictor, *, job_id: str, secret: str, loaded_in_s: float | None = None, on_shutdown=None):
    """`/health` and `/predict` over one loaded predictor, for callers with `secret` only (401 otherwise);
    `on_shutdown()` runs when the server stops."""
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, Header, Request
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app):
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title=f"felix serving {job_id}", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    lock = threading.Lock()
    stats = {"requests": 0, "started_at": utcnow()}

    if len(secret) < MIN_SECRET_CHARS:
        raise FelixError(f"the serving secret must be at least {MIN_SECRET_CHARS} characters, got {len(secret)}")

    @app.middleware("http")
    async def _secret_only(request: Request, call_next):
        # every path, unknown ones included: without the deployment's secret a caller learns nothing
        if not is_authorized(request.headers.get(AUTH_HEADER), secret):
            return JSONResponse({"detail": "this inference process answers its deployment's API only: "
                                           f"`{AUTH_HEADER}: Bearer <deployment secret>` is missing or wrong"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(PredictInputError)
    async def _bad_input(request: Request, exc: PredictInputError):
        return JSONResponse({"detail": exc.to_list()}, status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "job_id": job_id, "family": predictor.family.value, "device": predictor.device,
                "loaded_in_s": loaded_in_s, "pid": os.getpid(), **stats}

    # fastapi is imported in this function, so its markers are defaults (string annotations would not resolve)
    @app.post("/predict")
    def predict(payload: Any = Body(None), x_felix_job: str | None = Header(None)):  # noqa: B008
        if x_felix_job is not None and x_felix_job != job_id:
            return JSONResponse({"detail": f"this process serves job {job_id}, not {x_felix_job}"}, status_code=421)
        req = parse_predict_request(predictor.family, payload)
        started = time.perf_counter()
        with lock:
            out = predictor.predict(req)
            stats["requests"] += 1
        return {"id": job_id, "family": predictor.family.value, **out,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m felix_train.service.serving",
                                description="Serve one job's trained model: GET /health, POST /predict, for "
                                            f"callers with the secret in ${SECRET_ENV} only.")
    p.add_argument("--job-dir", required=True, help="the job folder ($FELIX_HOME/jobs/<id>)")
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port; see serving.json)")
    p.add_argument("--host", default=SERVING_HOST, help=f"address to bind (default {SERVING_HOST})")
    p.add_argument("--home", default=None, help="$FELIX_HOME for base models (default: the job folder's home)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="weights dtype (auto: bf16 on GPUs that support it, else fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = os.environ.pop(SECRET_ENV, "")  # out of the environment at once: nothing this process starts inherits it
    if len(secret) < MIN_SECRET_CHARS:
        print(f"cannot serve: set {SECRET_ENV} to a secret of at least {MIN_SECRET_CHARS} characters (a worker does; "
              f"by hand: {SECRET_ENV}=$(openssl rand -hex 32)); callers send it as `{AUTH_HEADER}: Bearer <secret>`",
              file=sys.stderr, flush=True)
        return 2
    job_dir = Path(args.job_dir).expanduser().resolve()
    home = Path(args.home).expanduser() if args.home else job_dir.parents[1]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.monotonic()
    try:
        predictor = load_predictor(job_dir, home=home, device=args.device, dtype=args.dtype)
        predictor.warm_up()
    except FelixError as err:
        print(f"cannot serve {job_dir}: {err}", file=sys.stderr, flush=True)
        return 1
    loaded_in = round(time.monotonic() - started, 3)
    try:
        sock = _bind(args.host, args.port)
    except OSError as err:
        print(f"cannot listen on {args.host}:{args.port}: {err}; pick another --port (0: any free one)",
              file=sys.stderr, flush=True)
        return 1
    port = sock.getsockname()[1]
    job_id = job_dir.name
    info_path = job_dir / SERVING_FILE
    atomic_write_json(info_path, {"pid": os.getpid(), "host": args.host, "port": port, "job_id": job_id,
                                  "family": predictor.family.value, "model": str(predictor.source),
                                  "started_at": utcnow()})

    def _forget() -> None:
        if (read_json(info_path, default={}) or {}).get("pid") == os.getpid():
            info_path.unlink(missing_ok=True)

    atexit.register(_forget)  # uvicorn re-raises SIGTERM after its shutdown: the app's lifespan forgets too
    shown = predictor.source.relative_to(job_dir) if predictor.source.is_relative_to(job_dir) else predictor.source.name
    print(f"serving job {job_id} ({predictor.family.value}, {shown}) on http://{args.host}:{port} "
          f"(loaded in {loaded_in}s, device {predictor.device})", flush=True)

    import uvicorn

    app = create_serving_app(predictor, job_id=job_id, secret=secret, loaded_in_s=loaded_in, on_shutdown=_forget)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on"))
    server.run(sockets=[sock])
    return 0

