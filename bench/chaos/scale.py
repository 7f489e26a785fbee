"""The store at scale: job rows over 1,000 users, `GET /felix/training-jobs` and `POST` latency, claims per second.

The store is filled in stages (default 1,000 then 100,000 rows) with SQLAlchemy core bulk inserts of
realistic rows (a resolved spec, progress, metrics or an error; created over the last 180 days; 10
projects); on PostgreSQL each fill ends with the `VACUUM ANALYZE` autovacuum would soon run. One heavy
user owns `heavy_share` of the rows, so a deep page means something; the others own ~80 each. At each
stage:

- `GET /felix/training-jobs` p50/p99 through the real app (`create_app` under FastAPI's TestClient,
  in process: no network, the rate limit raised) for a typical and the heavy user: the first page,
  `status` and `project_id` filters, a deep `offset`, and the same depth by cursor (`after`); and the
  same query on the store alone (p50), so the database's share is visible;
- `POST /felix/training-jobs` p50/p99 (a valid tiny LLM spec);
- claims per second: 4 processes, started together, calling `Store.claim_job` on `claim_rows` freshly
  inserted `requested` rows until the queue is empty (or 5 s).

`Filler` is also what `scripts/store_list_bench.py` fills its database with.
PostgreSQL runs in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from bench.chaos.schedule import JobKind, job_spec

STATUS_MIX = (("complete", 0.70), ("failed", 0.15), ("cancelled", 0.12), ("running", 0.03))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def _ms(values: list[float]) -> dict:
    return {"p50_ms": round(percentile(values, 50) * 1000, 2), "p99_ms": round(percentile(values, 99) * 1000, 2),
            "n": len(values)}


class Filler:
    """Bulk-inserts users and job rows into a store (core inserts, batches of 5,000)."""

    def __init__(self, store, *, users: int, heavy_share: float, seed: int):
        from felix_train.service.store import hash_api_key, new_api_key
        from felix_train.spec import validate_spec

        self.store, self.users, self.heavy_share = store, users, heavy_share
        self.rng = random.Random(seed)
        self.keys = {i: new_api_key() for i in range(3)}  # the heavy user, a typical one, the one who POSTs
        rows = [{"name": f"scale-u{i:04d}", "key_hash": hash_api_key(self.keys.get(i, uuid.uuid4().hex)),
                 "created_at": _now()} for i in range(users)]
        from felix_train.service.store import User

        self._insert(User.__table__, rows)
        with store.reading() as s:
            from sqlalchemy import select

            self.user_ids = list(s.scalars(select(User.id).where(User.name.like("scale-u%")).order_by(User.name)))
        spec = job_spec(JobKind.LLM, max_steps=60, save_steps=5, seed=42)
        self.spec = validate_spec(spec).to_json()
        self.rows = 0

    def _insert(self, table, rows: list[dict]) -> None:
        from sqlalchemy import insert

        for i in range(0, len(rows), 5000):
            with self.store.engine.execution_options(felix_write=True).begin() as conn:
                conn.execute(insert(table), rows[i:i + 5000])

    def _owner(self) -> int:
        if self.rng.random() < self.heavy_share:
            return self.user_ids[0]
        return self.user_ids[self.rng.randrange(1, len(self.user_ids))]

    def jobs(self, n: int, *, status: str | None = None, recent: bool = False) -> None:
        from felix_train.jobs import JobStatus, new_job_id
        from felix_train.service.store import Job

        now = _now()
        rows = []
        statuses, weights = zip(*STATUS_MIX)
        for _ in range(n):
            st = status or self.rng.choices(statuses, weights)[0]
            created = now - timedelta(seconds=self.rng.uniform(0, 1) if recent else self.rng.uniform(60, 180 * 86400))
            spec = {**self.spec, "engine": {**self.spec["engine"], "job_id": None}}
            rows.append({
                "id": new_job_id(), "owner_id": self._owner(), "name": f"job-{self.rows + len(rows)}",
                "project_id": self.rng.choice([None, *(f"p{i}" for i in range(10))]), "spec": spec,
                "status": JobStatus(st), "created_at": created, "updated_at": created,
                "started_at": None if st == "requested" else created + timedelta(seconds=5),
                "finished_at": created + timedelta(seconds=60) if st in ("complete", "failed", "cancelled") else None,
                "progress": {"step": 60, "total_steps": 60, "epoch": 1.0, "eta_s": 0.0},
                "error": {"type": "RunnerExited", "message": "the run ended with signal 9", "where": "worker",
                          "errors": []} if st == "failed" else None,
                "metrics": {"train_loss": self.rng.uniform(1, 7), "train_runtime_s": 4.2} if st == "complete" else None,
                "worker_id": None, "heartbeat_at": None, "stop_requested": False, "attempts": 0 if st == "requested" else 1,
                "deploy_requested": False,
            })
        self._insert(Job.__table__, rows)
        self.rows += n
        self.settle()

    def settle(self) -> None:
        """PostgreSQL: `VACUUM ANALYZE` the tables, as autovacuum soon would after a bulk load (fresh statistics,
        and the visibility map that index-only scans need); SQLite keeps no statistics unless asked."""
        if self.store.is_sqlite:
            return
        with self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE jobs")
            conn.exec_driver_sql("VACUUM ANALYZE users")

    def finish_claimed(self) -> None:
        from sqlalchemy import update

        from felix_train.jobs import JobStatus
        from felix_train.service.store import Job

        with self.store.engine.execution_options(felix_write=True).begin() as conn:
            conn.execute(update(Job).where(Job.worker_id.like("scale-claimer-%"))
                         .values(status=JobStatus.COMPLETE, worker_id=None, heartbeat_at=None))
        self.settle()


def _now():
    from felix_train.service.store import utcnow

    return utcnow()


def _claimer(url: str, worker: int, seconds: float, start, queue) -> None:
    from felix_train.service.store import Store

    store = Store(url, create=False)
    n, lat = 0, []
    try:
        store.count_jobs()  # connected (and imported) before the start, so that start-up is not timed
        start.wait(timeout=120)
        t0 = time.perf_counter()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            job = store.claim_job(worker_id=f"scale-claimer-{worker}")
            lat.append(time.perf_counter() - t)
            if job is None:  # the queue is empty: the rate is over the time it took
                break
            n += 1
        elapsed = time.perf_counter() - t0
    finally:
        store.close()
    queue.put((n, lat, elapsed))


def claims_per_second(url: str, *, workers: int = 4, seconds: float = 5.0) -> dict:
    """`workers` processes claim together for `seconds` or until the queue is empty; claims per second over
    all of them (claims / the longest worker's time), and each claim's latency."""
    ctx = multiprocessing.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=_claimer, args=(url, i, seconds, start, queue), daemon=True) for i in range(workers)]
    for p in procs:
        p.start()
    results = []
    try:
        start.wait(timeout=120)
        for _ in procs:
            results.append(queue.get(timeout=seconds + 120))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    claimed = sum(n for n, _, _ in results)
    lat = [x for _, ls, _ in results for x in ls]
    wall = max(e for _, _, e in results)
    return {"workers": workers, "claims": claimed, "seconds": round(wall, 2),
            "claims_per_s": round(claimed / wall, 1), "claim": _ms(lat) if lat else None}


def _cases(heavy_rows: int) -> list[tuple[str, int, dict]]:
    deep = max(heavy_rows - 200, 1)
    return [("typical user, first page", 1, {}),
            ("typical, status=complete&project_id=p1", 1, {"status": "complete", "project_id": "p1"}),
            ("heavy user, first page", 0, {}),
            ("heavy, limit=20", 0, {"limit": 20}),
            ("heavy, status=complete", 0, {"status": "complete"}),
            ("heavy, status=running", 0, {"status": "running"}),
            ("heavy, project_id=p3", 0, {"project_id": "p3"}),
            (f"heavy, offset={deep}", 0, {"offset": deep}),
            (f"heavy, after=<cursor at {deep}>", 0, {"after": deep})]


def measure_api(store, home: Path, filler: Filler, *, requests: int, posts: int) -> dict:
    from fastapi.testclient import TestClient

    from felix_train.jobs import JobStatus
    from felix_train.service.api import create_app
    from felix_train.service.api.config import Settings
    from felix_train.service.store import JobCursor

    settings = Settings(home=home, database_url=store.url, rate_limit_per_minute=1_000_000_000)
    heavy_rows = store.list_jobs(owner_id=filler.user_ids[0], limit=1)[1]
    out: dict = {"heavy_user_rows": heavy_rows,
                 "typical_user_rows": store.list_jobs(owner_id=filler.user_ids[1], limit=1)[1], "list": {}}
    with TestClient(create_app(settings, store=store)) as client:
        for label, user, params in _cases(heavy_rows):
            owner = filler.user_ids[user]
            cursor = None
            if "after" in params:  # the cursor a client paging by `next_cursor` holds at that depth
                row = store.list_jobs(owner_id=owner, offset=params["after"] - 1, limit=1)[0][0]
                cursor = JobCursor.of(row)
                params = {**params, "after": cursor.encode()}
            headers = {"Authorization": f"Bearer {filler.keys[user]}"}
            times, r = _timed(lambda: client.get("/felix/training-jobs", params=params, headers=headers), 200,
                              requests)
            kw = {"status": JobStatus(params["status"]) if "status" in params else None,
                  "project_id": params.get("project_id"), "limit": params.get("limit", 200),
                  "offset": params.get("offset", 0), "after": cursor}
            db = []
            for _ in range(max(requests // 4, 5)):
                t = time.perf_counter()
                store.page_jobs(owner_id=owner, light=True, **kw)
                db.append(time.perf_counter() - t)
            out["list"][label] = {**_ms(times), "rows": len(r.json()["data"]), "count": r.json()["count"],
                                  "store_p50_ms": round(statistics.median(db) * 1000, 2)}
        body = {**job_spec(JobKind.LLM, max_steps=60, save_steps=5, seed=42), "name": "scale-post"}
        headers = {"Authorization": f"Bearer {filler.keys[2]}"}  # not a measured user: their counts stay put
        times, _ = _timed(lambda: client.post("/felix/training-jobs", json=body, headers=headers), 201, posts)
        out["post"] = _ms(times)
    return out


def _timed(call, status: int, n: int, warmup: int = 3) -> tuple[list[float], object]:
    """Seconds each of `n` calls took (after `warmup` untimed ones), and the last response; any other status raises."""
    times = []
    for i in range(n + warmup):
        t = time.perf_counter()
        r = call()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if r.status_code != status:
            raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}")
    return times, r


def postgres_schema(base: str) -> tuple[str, object, str]:
    """A fresh schema on `base`: (url with search_path set, admin engine, schema name)."""
    from sqlalchemy import create_engine, text

    schema = f"chaos_scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", admin, schema


def run_backend(name: str, url: str, home: Path, *, stages: list[int], users: int, heavy_share: float,
                requests: int, posts: int, claim_rows: int, seed: int, deadline: float, say) -> dict:
    from felix_train.service.store import Store

    store = Store(url, home=home)
    out: dict = {"backend": name, "stages": {}}
    try:
        t = time.monotonic()
        filler = Filler(store, users=users, heavy_share=heavy_share, seed=seed)
        for target in stages:
            if time.monotonic() > deadline:
                out["stopped"] = "deadline"
                break
            t = time.monotonic()
            filler.jobs(target - filler.rows)
            fill_s = round(time.monotonic() - t, 1)
            say(f"{name}: {target:,} rows ({fill_s}s to insert); measuring")
            stage = {"fill_s": fill_s, **measure_api(store, home, filler, requests=requests, posts=posts)}
            filler.jobs(claim_rows, status="requested", recent=True)
            stage["claims"] = claims_per_second(url)
            filler.finish_claimed()  # the claimed rows end `complete`: the next stage's filters see the same mix
            stage["total_rows"] = store.count_jobs()
            out["stages"][str(target)] = stage
    finally:
        store.close()
    return out


def run(*, home: Path, postgres_url: str | None, stages: list[int], users: int = 1000, heavy_share: float = 0.2,
        requests: int = 100, posts: int = 50, claim_rows: int = 1000, seed: int = 0, deadline: float, say) -> dict:
    out: dict = {"users": users, "heavy_share": heavy_share, "requests_per_case": requests, "posts": posts}
    kw = dict(stages=stages, users=users, heavy_share=heavy_share, requests=requests, posts=posts,
              claim_rows=claim_rows, seed=seed, deadline=deadline, say=say)
    sqlite_home = home / "sqlite"
    out["sqlite"] = run_backend("sqlite", f"sqlite:///{sqlite_home / 'felix.db'}", sqlite_home, **kw)
    if postgres_url:
        from sqlalchemy import text

        url, admin, schema = postgres_schema(postgres_url)
        try:
            out["postgresql"] = run_backend("postgresql", url, home / "pg", **kw)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
            out["postgresql_schema_dropped"] = schema
    return out
