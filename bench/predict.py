#!/usr/bin/env python
"""Latency and throughput of `POST /felix/trained-models/{id}/predict` on deployed models; JSON on stdout.

Usage:
    python bench/predict.py [--home DIR] [--gliner-model felix/tiny-gliner2] [--llm-model felix/tiny-llm]
        [--requests 100] [--batch-size 16] [--batches 20] [--llm-requests 10] [--llm-tokens 32]
        [--skip-gliner] [--skip-llm] [--out FILE]

What it does, end to end and offline: starts a real API server (`felix-train serve`) and a
real worker on a fresh SQLite store under `--home` (default: a temporary `$FELIX_HOME`; tiny
base models are built there once), trains one short job per model (`max_steps` 10, on the
built-in datasets `felix-ner-quickstart` and `felix-chat-mini`), deploys both, and measures:

- `gliner2.single`: sequential one-text requests through the API: p50/p95/mean latency (ms),
  and the same straight to the inference process' port (`direct`), so `api_overhead_ms_p50` is
  the cost of the API hop (auth, store lookup, validation, loopback forward);
- `gliner2.batch`: `--batches` requests of `--batch-size` texts each: texts/s and p50 latency;
- `llm`: `--llm-requests` greedy generations of up to `--llm-tokens` tokens: generated tokens/s
  (completion tokens over wall time) and p50/p95 latency;
- `deploy_s`: seconds from `POST .../deploy` to `deployed` (process start, model load, warm-up).

Latencies are wall-clock at the client; `model_ms_p50` is the time the inference process
itself reports (`latency_ms`). Every request is sequential (one client): this measures
per-request latency, not concurrency. The JSON also records the CPU count and thread settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from felix_train.service.serving import SERVING_HOST, get_json, post_json
    from felix_train.service.store import Store
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))
    from felix_train.service.serving import SERVING_HOST, get_json, post_json
    from felix_train.service.store import Store

NER_TEXTS = [
    "Alice Martin joined Globex in Paris last spring.",
    "Bob Chen left Initech and moved to Lagos with his family.",
    "The bakery on the corner makes the best bread in town.",
    "Carla Diaz presented the quarterly results of Acme Corp in Osaka on Monday.",
    "Emeka Obi founded Umbrella Labs in Toronto after working at Stark Industries.",
    "Researchers at the University of Detroit released a new phone app yesterday.",
    "Fatima Zahra will visit Berlin and Madrid in June to meet the Wayne Enterprises team.",
    "happy birthday Chidi!!! hope 1995 is your year",
]
LABELS = ["person", "organization", "location", "date", "product"]
PROMPTS = [
    [{"role": "user", "content": "What is 48 minus 10?"}],
    [{"role": "user", "content": "Which city is the capital of China?"}],
    [{"role": "system", "content": "You are Felix, a helpful assistant."},
     {"role": "user", "content": "What is gravity?"}],
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _summary(latencies_s: list[float]) -> dict:
    ms = [x * 1000 for x in latencies_s]
    return {"n": len(ms), "p50_ms": round(_percentile(ms, 0.5), 3), "p95_ms": round(_percentile(ms, 0.95), 3),
            "mean_ms": round(statistics.fmean(ms), 3) if ms else None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, home: Path, log_dir: Path):
        self.home = home
        self.db_url = f"sqlite:///{home / 'bench.db'}"
        self.store = Store(self.db_url, home=home)
        name = f"bench-{os.getpid()}-{int(time.time())}"
        _, key = self.store.create_user(name=name)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.port = _free_port()
        env = {**os.environ, "FELIX_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "felix_train.service.api", "--host", "127.0.0.1", "--port",
                              str(self.port), "--home", str(home), "--database-url", self.db_url, "--log-level",
                              "warning"], env=env, stdout=open(log_dir / "server.log", "wb"), stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "felix_train.service.worker", "--home", str(home), "--database-url",
                              self.db_url, "--poll", "0.1", "--concurrency", "2"], env=env,
                             stdout=open(log_dir / "worker.log", "wb"), stderr=subprocess.STDOUT),
        ]
        self._wait(lambda: self._up(), 60, "the API server")

    def _up(self) -> bool:
        try:
            return self.get("/base-models")[0] == 200
        except OSError:
            return False

    def get(self, path: str):
        return get_json("127.0.0.1", self.port, path, headers=self.headers, timeout_s=30)

    def post(self, path: str, body: dict | None = None):
        return post_json("127.0.0.1", self.port, path, body or {}, headers=self.headers, timeout_s=600)

    @staticmethod
    def _wait(predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")

    def wait_status(self, job_id: str, status: str, timeout_s: float) -> dict:
        def check():
            job = self.get(f"/felix/training-jobs/{job_id}")[1]
            if job["status"] == "failed" or (status == "deployed" and not job.get("deploy_requested")):
                raise RuntimeError(f"job {job_id}: {job['status']}; its log:\n"
                                   + str(self.get(f"/felix/training-jobs/{job_id}/logs")[1])[-3000:])
            return job if job["status"] == status else None
        return self._wait(check, timeout_s, f"job {job_id} to be {status}")

    def train_and_deploy(self, body: dict) -> tuple[str, float]:
        status, job = self.post("/felix/training-jobs", body)
        if status != 201:
            raise RuntimeError(f"job refused ({status}): {job}")
        self.wait_status(job["id"], "complete", 900)
        started = time.monotonic()
        self.post(f"/felix/training-jobs/{job['id']}/deploy")
        self.wait_status(job["id"], "deployed", 900)
        return job["id"], time.monotonic() - started

    def timed(self, path: str, body: dict, port: int | None = None, headers: dict | None = None) -> tuple[float, dict]:
        started = time.perf_counter()
        status, out = post_json(SERVING_HOST if port else "127.0.0.1", port or self.port, path, body,
                                headers=headers if headers is not None else self.headers, timeout_s=600)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"predict answered {status}: {out}")
        return elapsed, out

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.store.close()


def bench_gliner(b: Bench, args) -> dict:
    engine = {"max_steps": 10, "batch_size": 8, "report_to": [], "eval": {"fraction": 0}}
    job_id, deploy_s = b.train_and_deploy({"base_model": args.gliner_model, "engine": engine,
                                           "datasets": [{"name": "felix-ner-quickstart"}]})
    path = f"/felix/trained-models/{job_id}/predict"
    serving_port = b.store.get_job(job_id=job_id).serving_port
    direct = ("/predict", serving_port, {"X-Felix-Job": job_id})
    for i in range(5):  # warm-up
        b.timed(path, {"text": NER_TEXTS[i % len(NER_TEXTS)], "entities": LABELS})
    api, model, via_port = [], [], []
    for i in range(args.requests):
        body = {"text": NER_TEXTS[i % len(NER_TEXTS)], "entities": LABELS}
        elapsed, out = b.timed(path, body)
        api.append(elapsed)
        model.append(out["latency_ms"])
        via_port.append(b.timed(direct[0], body, port=direct[1], headers=direct[2])[0])
    batch_lat, texts = [], 0
    for i in range(args.batches):
        batch = [NER_TEXTS[(i + j) % len(NER_TEXTS)] for j in range(args.batch_size)]
        elapsed, out = b.timed(path, {"texts": batch, "entities": LABELS, "batch_size": args.batch_size})
        batch_lat.append(elapsed)
        texts += len(out["results"])
    single = {**_summary(api), "model_ms_p50": round(_percentile(model, 0.5), 3),
              "direct": _summary(via_port),
              "api_overhead_ms_p50": round((_percentile(api, 0.5) - _percentile(via_port, 0.5)) * 1000, 3),
              "texts_per_s": round(len(api) / sum(api), 2)}
    batched = {**_summary(batch_lat), "batch_size": args.batch_size, "texts_per_s": round(texts / sum(batch_lat), 2)}
    b.post(f"/felix/training-jobs/{job_id}/undeploy")
    return {"model": args.gliner_model, "job_id": job_id, "deploy_s": round(deploy_s, 2), "single": single,
            "batch": batched}


def bench_llm(b: Bench, args) -> dict:
    engine = {"max_steps": 10, "batch_size": 4, "report_to": [], "eval": {"fraction": 0}, "max_length": 128}
    job_id, deploy_s = b.train_and_deploy({"base_model": args.llm_model, "engine": engine,
                                           "datasets": [{"name": "felix-chat-mini"}]})
    path = f"/felix/trained-models/{job_id}/predict"
    b.timed(path, {"messages": PROMPTS[0], "max_new_tokens": 4})  # warm-up
    lat, model, tokens = [], [], 0
    for i in range(args.llm_requests):
        elapsed, out = b.timed(path, {"messages": PROMPTS[i % len(PROMPTS)], "max_new_tokens": args.llm_tokens,
                                      "temperature": 0})
        lat.append(elapsed)
        model.append(out["latency_ms"])
        tokens += out["usage"]["completion_tokens"]
    b.post(f"/felix/training-jobs/{job_id}/undeploy")
    return {"model": args.llm_model, "job_id": job_id, "deploy_s": round(deploy_s, 2), **_summary(lat),
            "model_ms_p50": round(_percentile(model, 0.5), 3), "max_new_tokens": args.llm_tokens,
            "completion_tokens": tokens, "tokens_per_s": round(tokens / sum(lat), 2) if lat else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", default=None, help="$FELIX_HOME to use (default: a temporary one, removed after)")
    p.add_argument("--gliner-model", default="felix/tiny-gliner2")
    p.add_argument("--llm-model", default="felix/tiny-llm")
    p.add_argument("--requests", type=int, default=100, help="single-text GLiNER2 requests (default 100)")
    p.add_argument("--batch-size", type=int, default=16, help="texts per batched GLiNER2 request (default 16)")
    p.add_argument("--batches", type=int, default=20, help="batched GLiNER2 requests (default 20)")
    p.add_argument("--llm-requests", type=int, default=10, help="LLM generations (default 10)")
    p.add_argument("--llm-tokens", type=int, default=32, help="max_new_tokens per generation (default 32)")
    p.add_argument("--skip-gliner", action="store_true")
    p.add_argument("--skip-llm", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args(argv)

    temp = None if args.home else tempfile.mkdtemp(prefix="felix-bench-predict-")
    home = Path(args.home or temp).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    log_dir = home / "bench-logs"
    log_dir.mkdir(exist_ok=True)
    report: dict = {"benchmark": "predict", "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                                        "platform": platform.platform(),
                                                        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}}
    bench = Bench(home, log_dir)
    try:
        if not args.skip_gliner:
            report["gliner2"] = bench_gliner(bench, args)
        if not args.skip_llm:
            report["llm"] = bench_llm(bench, args)
    except Exception as err:  # noqa: BLE001 - the report says what broke, with the service logs' tails
        report["error"] = f"{type(err).__name__}: {err}"
        for name in ("server.log", "worker.log"):
            report.setdefault("logs", {})[name] = (log_dir / name).read_text(errors="replace")[-2000:]
    finally:
        bench.close()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if "error" in report else 0


if __name__ == "__main__":
    raise SystemExit(main())
