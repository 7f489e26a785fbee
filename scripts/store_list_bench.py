"""How the store's job queries scale: list p50/p99 and claim time at N job rows (a benchmark, not a test).

    python scripts/store_list_bench.py [--rows 100000] [--users 1000] [--heavy 10000] [--url URL] [--compare 0002]

Fills a fresh database (SQLite in a temp folder, or the PostgreSQL `--url`, in a schema of its own that is
dropped afterwards) with `--rows` jobs spread over `--users` users, plus one heavy user who owns `--heavy` of
them, then times `Store.list_jobs` (first page, a `status` filter, a `project_id` filter, a deep offset) for
random users and for the heavy one, and `claim_job` with requested jobs at the end of the queue. With
`--compare REV` it then migrates the same rows down to schema revision REV (its indexes) and measures again,
so both figures come from one machine under the same load.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from sqlalchemy import create_engine, insert, text

from felix_train.jobs import JobStatus
from felix_train.service.store import Job, Store, User

STATUSES = [JobStatus.COMPLETE] * 80 + [JobStatus.FAILED] * 10 + [JobStatus.CANCELLED] * 6 + \
    [JobStatus.RUNNING] * 2 + [JobStatus.REQUESTED] * 2
SPEC = {"name": "bench", "base_model": "felix/tiny-gliner2", "training_type": "lora",
        "dataset": {"train": "ner", "validation": "ner-val"}, "hyperparameters": {"epochs": 3, "lr": 5e-5},
        "labels": ["person", "organization", "location", "date"]}


def fill(store: Store, *, rows: int, users: int, heavy: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with store.engine.begin() as conn:
        conn.execute(insert(User), [{"id": i + 1, "name": f"u{i}", "key_hash": uuid.uuid4().hex * 2,
                                     "created_at": datetime.now(timezone.utc)} for i in range(users)])
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    batch: list[dict] = []
    for n in range(rows):
        owner = 1 if n % max(rows // heavy, 1) == 0 and heavy else rng.randint(2, users)
        # the queue's few requested jobs sit at the end (the newest): a claim must not scan the rest
        status = JobStatus.REQUESTED if n >= rows - 20 else rng.choice(
            [s for s in STATUSES if s is not JobStatus.REQUESTED])
        when = start + timedelta(seconds=n)
        batch.append({"id": f"job-{uuid.uuid4().hex}", "owner_id": owner, "name": f"j{n}",
                      "project_id": f"p{rng.randint(0, 9)}", "spec": SPEC, "status": status, "created_at": when,
                      "updated_at": when, "stop_requested": False, "attempts": 1, "deploy_requested": False,
                      "progress": {"step": 10, "total_steps": 10, "epoch": 1, "eta_s": None}})
        if len(batch) == 5000:
            with store.engine.begin() as conn:
                conn.execute(insert(Job), batch)
            batch = []
    if batch:
        with store.engine.begin() as conn:
            conn.execute(insert(Job), batch)
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def timed(fn, n: int) -> tuple[float, float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def bench(url: str, args) -> None:  # noqa: ANN001
    store = Store(url)
    t0 = time.perf_counter()
    fill(store, rows=args.rows, users=args.users, heavy=args.heavy)
    print(f"{store.engine.dialect.name}: {args.rows} rows filled in {time.perf_counter() - t0:.0f}s")
    measure(store, args, "schema head")
    if args.compare:
        from alembic import command

        from felix_train.service.store.migrate import alembic_config

        with store.engine.execution_options(felix_write=True).begin() as conn:
            command.downgrade(alembic_config(conn), args.compare)
            conn.execute(text("UPDATE jobs SET status = 'requested', worker_id = NULL WHERE worker_id IS NOT NULL"))
            conn.execute(text("ANALYZE"))
        measure(store, args, f"schema {args.compare}")
    store.close()


def measure(store: Store, args, label: str) -> None:  # noqa: ANN001
    print(f" {label}")
    rng = random.Random(1)
    cases = {
        "first page": dict(),
        "status=complete": dict(status=JobStatus.COMPLETE),
        "status=failed,cancelled": dict(status=[JobStatus.FAILED, JobStatus.CANCELLED]),
        "project_id=p3": dict(project_id="p3"),
        "deep offset": dict(offset=80, limit=20),
    }
    for label, kw in cases.items():
        kw = {"limit": 20, **kw}
        p50, p99 = timed(lambda: store.list_jobs(owner_id=rng.randint(2, args.users), **kw), args.n)
        hp50, hp99 = timed(lambda: store.list_jobs(owner_id=1, **({**kw, "offset": args.heavy - 100}
                                                                   if label == "deep offset" else kw)), args.n)
        print(f"  list {label:<24} any user p50 {p50:6.2f} p99 {p99:6.2f} ms | "
              f"heavy user p50 {hp50:6.2f} p99 {hp99:6.2f} ms")
    claims = []
    for i in range(20):
        t = time.perf_counter()
        assert store.claim_job(worker_id=f"w{i}") is not None
        claims.append((time.perf_counter() - t) * 1000)
    print(f"  claim_job (requested jobs at the end) p50 {statistics.median(claims):.2f} max {max(claims):.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--heavy", type=int, default=10_000, help="jobs of the one heavy user (user 1)")
    p.add_argument("--n", type=int, default=200, help="timed calls per case")
    p.add_argument("--url", default=None, help="a PostgreSQL URL (default: SQLite in a temp folder)")
    p.add_argument("--compare", default=None, metavar="REV", help="then measure again at schema revision REV")
    args = p.parse_args()
    if args.url is None:
        with tempfile.TemporaryDirectory() as tmp:
            bench(f"sqlite:///{tmp}/felix.db", args)
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in args.url else "?"
        bench(f"{args.url}{sep}options={quote(f'-csearch_path={schema}')}", args)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
