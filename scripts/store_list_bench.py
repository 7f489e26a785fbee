"""How the store's job queries scale, the store alone: list p50/p99 and claim time at N job rows (a benchmark).

    python scripts/store_list_bench.py [--rows 100000] [--users 1000] [--heavy-share 0.1] [--url URL] [--compare 0002]

Fills a fresh database (SQLite in a temp folder, or the PostgreSQL `--url`, in a schema of its own that is
dropped afterwards) with `bench.chaos.scale.Filler` (the rows `make chaos` measures the API on), then
times `Store.page_jobs` (first page, a `status` filter, a `project_id` filter, a deep offset and the
same depth by cursor) for random users and for the heavy one, and `claim_job` with requested jobs at
the end of the queue. With `--compare REV` it then migrates the same rows down to schema revision
REV (its indexes) and measures again, so both figures come from one machine under the same load.
`make chaos` (`bench/chaos/scale.py`) measures the same through the API, with POST and claims/s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos.scale import Filler, postgres_schema  # noqa: E402
from felix_train.jobs import JobStatus  # noqa: E402
from felix_train.service.store import JobCursor, Store  # noqa: E402


def timed(fn, n: int) -> tuple[float, float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def bench(url: str, args, home: Path) -> None:  # noqa: ANN001
    store = Store(url, home=home)
    t0 = time.perf_counter()
    filler = Filler(store, users=args.users, heavy_share=args.heavy_share, seed=0)
    filler.jobs(args.rows - 20)
    filler.jobs(20, status="requested", recent=True)  # the queue's few requested jobs are the newest
    print(f"{store.engine.dialect.name}: {args.rows} rows filled in {time.perf_counter() - t0:.0f}s")
    measure(store, filler, args, "schema head")
    if args.compare:
        from alembic import command

        from felix_train.service.store.migrate import alembic_config

        with store.engine.execution_options(felix_write=True).begin() as conn:
            command.downgrade(alembic_config(conn), args.compare)
            conn.execute(text("UPDATE jobs SET status = 'requested', worker_id = NULL WHERE worker_id IS NOT NULL"))
        filler.settle()
        measure(store, filler, args, f"schema {args.compare}")
    store.close()


def measure(store: Store, filler: Filler, args, label: str) -> None:  # noqa: ANN001
    print(f" {label}")
    rng = random.Random(1)
    heavy = filler.user_ids[0]
    heavy_rows = store.list_jobs(owner_id=heavy, limit=1)[1]
    deep = max(heavy_rows - 100, 1)
    deep_cursor = JobCursor.of(store.list_jobs(owner_id=heavy, offset=deep - 1, limit=1)[0][0])
    cases = {
        "first page": dict(),
        "status=complete": dict(status=JobStatus.COMPLETE),
        "status=failed,cancelled": dict(status=[JobStatus.FAILED, JobStatus.CANCELLED]),
        "project_id=p3": dict(project_id="p3"),
        "deep offset": dict(offset=40),
        "deep cursor": dict(),
    }
    for label, kw in cases.items():
        kw = {"limit": 20, "light": True, **kw}
        anyone = "      (the heavy user's cursor only)   "
        if label != "deep cursor":
            p50, p99 = timed(lambda: store.page_jobs(owner_id=rng.choice(filler.user_ids[1:]), **kw), args.n)
            anyone = f"any user p50 {p50:6.2f} p99 {p99:6.2f} ms"
        hkw = ({**kw, "offset": deep} if label == "deep offset" else
               {**kw, "after": deep_cursor} if label == "deep cursor" else kw)
        hp50, hp99 = timed(lambda: store.page_jobs(owner_id=heavy, **hkw), args.n)
        print(f"  list {label:<24} {anyone} | heavy user ({heavy_rows}) p50 {hp50:6.2f} p99 {hp99:6.2f} ms")
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
    p.add_argument("--heavy-share", type=float, default=0.1, help="share of the rows the one heavy user owns")
    p.add_argument("--n", type=int, default=200, help="timed calls per case")
    p.add_argument("--url", default=None, help="a PostgreSQL URL (default: SQLite in a temp folder)")
    p.add_argument("--compare", default=None, metavar="REV", help="then measure again at schema revision REV")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.url is None:
            bench(f"sqlite:///{tmp}/felix.db", args, Path(tmp))
            return
        url, admin, schema = postgres_schema(args.url)
        try:
            bench(url, args, Path(tmp))
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    main()
