"""`felix-train worker` (also `python -m felix_train.service.worker`): the worker's command line.

The store's schema is migrated on start (`Store(...)` runs the Alembic upgrade); a database
migrated by a newer felix_train is refused with exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from felix_train.jobs import felix_home
from felix_train.service.store import Store, StoreError
from felix_train.service.worker.core import Worker

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="felix-train worker", description="Claim queued training jobs and run them.")
    p.add_argument("--home", default=None, help="$FELIX_HOME (default ~/.felix)")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL (default $FELIX_DATABASE_URL, else SQLite at $FELIX_HOME/felix.db)")
    p.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue (default 1)")
    p.add_argument("--worker-id", default=None, help="this worker's unique name (default host-pid-random)")
    p.add_argument("--heartbeat-timeout", type=float, default=60.0,
                   help="seconds without a heartbeat before a running job is requeued (default 60)")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="runs a job gets when they are killed (OOM, a signal), preempted or their worker dies; "
                        "then it fails with the reason's code (default 3)")
    p.add_argument("--memory-events", default=None, metavar="PATH",
                   help="the cgroup v2 memory.events whose oom_kill counter tells an OOM kill from another "
                        "(default: this process' cgroup's, found through /proc/self/cgroup)")
    p.add_argument("--stop-grace", type=float, default=600.0,
                   help="on SIGTERM, seconds the runs get to checkpoint before they are killed (default 600)")
    p.add_argument("--accelerate-config", default=None, help="accelerate config file for distributed jobs")
    p.add_argument("--runner-cmd", default=None,
                   help="child command before `SPEC --job-id ID --home HOME` (default: python -m felix_train run)")
    p.add_argument("--max-deployments", type=int, default=4,
                   help="deployed models this worker serves at once (default 4; 0: none)")
    p.add_argument("--deploy-timeout", type=float, default=600.0,
                   help="seconds a new inference process gets to load its model and answer /health (default 600)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = felix_home(args.home)
    try:
        store = Store(args.database_url, home=home)
    except StoreError as err:  # SchemaTooNew: a newer felix_train migrated the database
        print(str(err), file=sys.stderr)
        return 1
    try:
        worker = Worker(store, home=home, worker_id=args.worker_id, concurrency=args.concurrency, poll_s=args.poll,
                        heartbeat_timeout_s=args.heartbeat_timeout, max_attempts=args.max_attempts,
                        runner_cmd=shlex.split(args.runner_cmd) if args.runner_cmd else None,
                        stop_grace_s=args.stop_grace, accelerate_config=args.accelerate_config,
                        max_deployments=args.max_deployments, deploy_timeout_s=args.deploy_timeout,
                        memory_events_path=args.memory_events)
    except ValueError as err:
        store.close()
        print(str(err), file=sys.stderr)
        return 2
    try:
        return worker.run()
    finally:
        store.close()
