"""The inference process of a deployed job: one loaded predictor behind `GET /health` and `POST /predict`.

    python -m felix_train.service.serving --job-dir $FELIX_HOME/jobs/<id> --port P [--host 127.0.0.1]

A worker starts one per deployed job (`felix_train.service.worker`). It loads the job's
`model/` once, warms it up, binds `--host:--port` (`--port 0`: any free port), writes
`serving.json` (`{pid, host, port, job_id, family, started_at}`) into the job folder, and serves

| endpoint | |
|---|---|
| `GET /health` | `{"status": "ok", "job_id", "family", "model", "device", ...}` once the model is loaded |
| `POST /predict` | one prediction (bodies in `protocol.py`); 422 names the offending field |

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
from felix_train.service.serving.predictors import load_predictor
from felix_train.service.serving.protocol import SERVING_FILE, SERVING_HOST, PredictInputError, parse_predict_request

log = logging.getLogger("felix_train.serving")

def create_serving_app(predictor, *, job_id: str, loaded_in_s: float | None = None, on_shutdown=None):
    """`/health` and `/predict` over one loaded predictor; `on_shutdown()` runs when the server stops."""
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

    @app.exception_handler(PredictInputError)
    async def _bad_input(request: Request, exc: PredictInputError):
        return JSONResponse({"detail": exc.to_list()}, status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "job_id": job_id, "family": predictor.family.value, "model": str(predictor.source),
                "device": predictor.device, "loaded_in_s": loaded_in_s, "pid": os.getpid(), **stats}

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
                                description="Serve one job's trained model: GET /health, POST /predict.")
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
    print(f"serving job {job_id} ({predictor.family.value}, {predictor.source}) on http://{args.host}:{port} "
          f"(loaded in {loaded_in}s, device {predictor.device})", flush=True)

    import uvicorn

    app = create_serving_app(predictor, job_id=job_id, loaded_in_s=loaded_in, on_shutdown=_forget)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on"))
    server.run(sockets=[sock])
    return 0

