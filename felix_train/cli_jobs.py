"""`felix-train jobs list|show|logs|events|checkpoints|stop|delete|deploy|undeploy`: the job commands of the CLI.

`jobs logs ID -f` follows a job's train.log until the job ends, waiting for a queued job's log to appear
(its state read from status.json or, for a job still queued in the service, from the store); `jobs events
ID -f` follows its typed events (events.jsonl) the same way. Never imports torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

def cmd_jobs(args) -> int:
    from felix_train.cli import _print_json, _table
    from felix_train.checkpoints import list_checkpoints
    from felix_train.errors import JobNotFound
    from felix_train.jobs import JobFolder, JobStatus, list_jobs

    if args.action in ("deploy", "undeploy"):
        return _jobs_deployment(args)
    try:
        if args.action == "list":
            rows = []
            for s in list_jobs(args.home):
                p = s.get("progress") or {}
                rows.append({"id": s.get("id"), "name": s.get("name"), "status": s.get("status"),
                             "step": f"{p.get('step', '')}/{p.get('total_steps') or ''}", "created_at": s.get("created_at")})
            print(_table(rows, ["id", "name", "status", "step", "created_at"]))
            return 0
        job = JobFolder(args.id, args.home)
        if args.action == "logs" and args.follow:  # a queued job has no folder yet: wait for it
            return _follow_logs(job, _StoreStatus(args))
        if args.action == "events":
            return _events(job, args)
        status = job.read_status()
        if args.action == "show":
            _print_json(status)
        elif args.action == "logs":
            return _cat(job.log_path)
        elif args.action == "checkpoints":
            rows = [m.model_dump(mode="json", exclude={"files"}) for m in list_checkpoints(job)]
            if args.json:
                _print_json(rows)
            else:
                print(_table(rows, ["uuid", "step", "epoch", "created_at"]))
        elif args.action == "stop":
            if status.get("status") != JobStatus.RUNNING.value:
                print(f"job {job.id} is {status.get('status')}; only a running job can be stopped", file=sys.stderr)
                return 1
            job.request_stop()
            print(f"stop requested for {job.id}: it checkpoints, then ends `cancelled`")
        elif args.action == "delete":
            if status.get("status") == JobStatus.RUNNING.value and not args.force:
                print(f"job {job.id} is running; stop it first (or --force)", file=sys.stderr)
                return 1
            job.delete()
            print(f"job {job.id} deleted")
        return 0
    except (JobNotFound, ValueError) as err:
        print(str(err), file=sys.stderr)
        return 1


def _jobs_deployment(args) -> int:
    """`jobs deploy|undeploy ID`: what `POST /felix/training-jobs/{id}/deploy|undeploy` does, on the store directly.

    A worker of the same store serves the model; `--wait` follows the job until it is `deployed`
    (or the deployment failed: the reason is in its log) or `complete` again.
    """
    from felix_train.errors import JobNotFound
    from felix_train.jobs import JobStatus
    from felix_train.service.store import Conflict, Store

    store = Store(args.database_url, home=args.home)
    try:
        if args.action == "deploy":
            job = store.request_deploy(job_id=args.id, owner_id=None)
            print(f"deploy requested for {job.id}: a worker serves it; `deployed` once it answers its health check")
        else:
            job = store.request_undeploy(job_id=args.id, owner_id=None)
            print(f"job {job.id} undeployed: `complete` again; its worker stops the inference process")
        if args.action == "undeploy" or not args.wait:
            return 0
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            job = store.get_job(job_id=args.id)
            if job.status == JobStatus.DEPLOYED:
                print(f"job {job.id} deployed (port {job.serving_port}, worker {job.serving_worker})")
                return 0
            if not job.deploy_requested:
                print(f"job {job.id}: the deployment failed; `felix-train jobs logs {job.id}` says why", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"job {args.id} not deployed after {args.timeout:g}s; is a worker running on this store?", file=sys.stderr)
        return 1
    except (JobNotFound, Conflict) as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        store.close()


def _cat(path: Path) -> int:
    if path.exists():
        sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


FOLLOW_POLL_S = 0.5
_ACTIVE = ("requested", "running")


def _sleep(seconds: float) -> None:
    """The follower's wait between two looks (a seam for tests)."""
    time.sleep(seconds)


class _StoreStatus:
    """A job's status in the store, when there is one: a queued job has a row but no folder until a worker claims it.

    The store is `--database-url`, else `$FELIX_DATABASE_URL`, else `$FELIX_HOME/felix.db` if it exists
    (never created here). Calling it gives the status, or None (no store, no such row, store unreachable).
    """

    def __init__(self, args):
        from felix_train.jobs import felix_home

        self.job_id = args.id
        self.url = getattr(args, "database_url", None) or os.environ.get("FELIX_DATABASE_URL")
        if not self.url and (felix_home(args.home) / "felix.db").is_file():
            self.url = f"sqlite:///{felix_home(args.home) / 'felix.db'}"
        self.store = None

    def __call__(self) -> str | None:
        if not self.url:
            return None
        from sqlalchemy.exc import SQLAlchemyError

        from felix_train.errors import JobNotFound
        from felix_train.service.store import Store

        try:
            if self.store is None:
                self.store = Store(self.url, create=False)
            return self.store.get_job(job_id=self.job_id).status.value
        except (JobNotFound, SQLAlchemyError):
            return None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _file_status(job) -> str | None:
    """status.json's status; None while there is none (a queued job) or it is unreadable."""
    try:
        state = job.read_state()
    except ValueError:
        return None
    return None if state is None else str(state.status)


def _follow_logs(job, store_status=lambda: None, poll_s: float | None = None) -> int:
    """Print the log and follow it until the job leaves `requested`/`running` (see `_follow`)."""
    pos = 0

    def emit() -> bool:
        nonlocal pos
        if job.log_path.exists():
            with open(job.log_path, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        return pos > 0

    return _follow(job, store_status, emit, "log", poll_s)


def _follow(job, store_status, emit, what: str, poll_s: float | None = None, *, settle: bool = False) -> int:
    """Call `emit()` (print what is new; True once anything was printed) until the job leaves `requested`/`running`.

    A queued job (a row in the store, no folder yet) is waited for. The job's state is read before each
    `emit()`, so what was written before it ended is all printed; with `settle`, once more one poll after the end
    (events: a status change is appended just after status.json is written).
    """
    from felix_train.errors import JobNotFound

    said_waiting = False
    try:
        while True:
            file_state = _file_status(job)
            row_state = store_status()
            if file_state is None and row_state is None and not job.root.is_dir():
                raise JobNotFound(f"no job {job.id!r} under {job.home / 'jobs'} nor in the store; "
                                  "`felix-train jobs list` shows the jobs")
            ended = (file_state is not None and file_state not in _ACTIVE) or \
                (row_state is not None and row_state not in _ACTIVE)
            printed = emit()
            if ended:
                if settle:
                    _sleep(FOLLOW_POLL_S if poll_s is None else poll_s)
                    emit()
                return 0
            if not printed and not said_waiting:
                print(f"job {job.id} is {file_state or row_state or 'starting'}: waiting for its {what} "
                      "(Ctrl-C stops following; the job goes on)", file=sys.stderr)
                said_waiting = True
            _sleep(FOLLOW_POLL_S if poll_s is None else poll_s)
    except KeyboardInterrupt:  # Ctrl-C ends the following, not the job
        return 130
    finally:
        close = getattr(store_status, "close", None)
        if close is not None:
            close()


# -- events ------------------------------------------------------------------------------------------------------

def _events(job, args) -> int:
    """`jobs events ID [-f] [--json] [--after N]`: the job's typed events (events.jsonl), one a line; `-f` follows
    them until the job ends (a queued job is waited for)."""
    from felix_train.errors import JobNotFound
    from felix_train.events import read_events

    cursor = args.after
    printed = False

    def emit() -> bool:
        nonlocal cursor, printed
        for event in read_events(job.root, after=cursor):
            print(json.dumps(event) if args.json else format_event(event), flush=True)
            cursor, printed = event["id"], True
        return printed

    if args.follow:
        return _follow(job, _StoreStatus(args), emit, "events", settle=True)
    if not job.root.is_dir():
        raise JobNotFound(f"no job {job.id!r} under {job.home / 'jobs'}; `felix-train jobs list` shows the jobs")
    emit()
    return 0


def format_event(event: dict) -> str:
    """`ID TIME LEVEL TYPE [step N] key=value ...`: one event for a terminal."""
    data = event.get("data") or {}
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items()
             if v is not None and k != "message"]
    if data.get("message"):
        parts.append(str(data["message"]))
    step = f" step {event['step']}" if event.get("step") is not None else ""
    return f"{event['id']:>5} {event.get('time', '')} {event.get('level', ''):<7} {event.get('type', '')}{step}: " \
           + " ".join(parts)
