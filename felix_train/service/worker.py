"""The worker: claims `requested` jobs from the store and runs each in a child process.

`felix-train worker [--concurrency N] [--poll S] [--worker-id ID] [--heartbeat-timeout S]`

For each claimed job the worker writes the job's spec to `jobs/<id>/request.json` and starts

    python -m felix_train run jobs/<id>/request.json --job-id ID --home HOME

(the runner itself relaunches under `accelerate launch` when the spec's
`engine.distributed.num_processes` is above 1). While a child runs, the worker

- heartbeats the job in the store, and mirrors `status.json`'s progress into it;
- forwards a stop request (the store's `stop_requested` → the job folder's `STOP` file);
- kills the child if the job is no longer its own (the store requeued it after a missed
  heartbeat, so another worker may be running it: two runs never share a job folder);
- recovers jobs of dead workers: any worker requeues a `running` job whose heartbeat is
  older than `--heartbeat-timeout`; its next run resumes from the last checkpoint.

When the child exits, its exit code and `status.json` give the job's final state:
0 complete, 1/2/3 failed, 4 cancelled, 75 preempted (back to `requested`).

On SIGTERM (or SIGINT) the worker stops claiming, sends SIGTERM to its children (they
checkpoint and exit 75, and their jobs go back to `requested`), waits for them, and exits.
A child also gets SIGTERM if the worker itself dies (Linux parent-death signal), so a
SIGKILLed worker leaves no orphan training behind.

The worker also serves deployed models (`POST /felix/training-jobs/{id}/deploy`). It claims a
pending deployment from the store and starts the job's inference process

    python -m felix_train.service.serving --job-dir jobs/<id> --port 0

(output in `jobs/<id>/serving.log`; the process writes the port it bound to `jobs/<id>/serving.json`).
The job becomes `deployed`, with that port in the store, only once the process answers
`GET /health`. While it serves, the worker heartbeats the deployment and

- stops the process when the deployment is withdrawn (undeployed, deleted, or recovered by
  another worker after a missed heartbeat): the store's `deployment_id` no longer matches;
- puts the job back to `complete` when the process dies, stops answering its health check,
  or never becomes healthy within `--deploy-timeout`, with the reason and the tail of
  `serving.log` in the job's train.log (a new `POST .../deploy` starts it again);
- on shutdown, stops its serving processes and hands their deployments back (the jobs stay
  requested for deployment, and another worker serves them).

A worker serves at most `--max-deployments` models at once (0: it serves none). Inference
processes listen on loopback only and the API forwards to them there, so with workers on
several machines only those on the API's machine should serve (the others: `--max-deployments 0`).

The child commands are parameters (`runner_cmd`, `--runner-cmd`; `serving_cmd`): tests run quick fake
jobs behind the same interface.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy.exc import DBAPIError

import felix_train
from felix_train.errors import JobNotFound
from felix_train.jobs import (
    JobFolder,
    JobStatus,
    append_line,
    atomic_write_json,
    felix_home,
    read_json,
    utcnow,
)
from felix_train.service.serving import (
    SERVING_FILE,
    SERVING_HOST,
    SERVING_LOG,
    get_json,
)
from felix_train.service.store import ClaimedDeployment, ClaimedJob, Store

log = logging.getLogger("felix_train.worker")

RUNNER_LOG = "runner.log"
"""The child's stdout/stderr, in the job folder (beside the contract's files)."""

REQUEST_FILE = "request.json"
"""The spec as the store holds it, written by the worker for the child to run."""

EXIT_COMPLETE, EXIT_FAILED, EXIT_SPEC, EXIT_DATASET, EXIT_CANCELLED, EXIT_PREEMPTED = 0, 1, 2, 3, 4, 75


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_runner_cmd() -> list[str]:
    return [sys.executable, "-m", "felix_train", "run"]


def default_serving_cmd() -> list[str]:
    return [sys.executable, "-m", "felix_train.service.serving"]


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _set_parent_death_signal() -> None:
    """In the child, before exec: get SIGTERM when the worker dies (Linux), so a run never outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the heartbeat fencing still protects the job
        pass


@dataclass
class _Child:
    job: ClaimedJob
    folder: JobFolder
    proc: subprocess.Popen
    out: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    status_key: tuple = ()
    stop_forwarded: bool = False
    terminated: bool = False


@dataclass
class _Serving:
    """A deployment this worker serves: the job's inference process."""

    deployment: ClaimedDeployment
    folder: JobFolder
    proc: subprocess.Popen
    out: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    port: int | None = None
    healthy: bool = False
    failed_checks: int = 0
    last_check: float = 0.0

    @property
    def job_id(self) -> str:
        return self.deployment.job_id


class Worker:
    """Runs up to `concurrency` jobs at once from `store`, their folders under `home`.

    Args:
        store: the job store shared with the API.
        home: `$FELIX_HOME` (job folders, datasets, models).
        worker_id: this worker's name in the store (unique; default host-pid-random).
        concurrency: jobs run at once.
        poll_s: seconds between two looks at the queue and the children.
        heartbeat_timeout_s: a `running` job whose heartbeat is older is requeued by any worker.
        max_attempts: a job whose workers died this many times is `failed` instead of requeued.
        runner_cmd: the child command before `SPEC --job-id ID --home HOME`; default
            `python -m felix_train run` (which relaunches itself under accelerate for distributed specs).
        stop_grace_s: on shutdown, how long children get to checkpoint before they are killed.
        accelerate_config: an accelerate config file for distributed jobs.
        max_deployments: models served at once by this worker (0: it serves none).
        serving_cmd: the inference process before `--job-dir DIR --port 0`; default
            `python -m felix_train.service.serving`.
        deploy_timeout_s: how long a new inference process gets to load its model and answer `/health`.
    """

    def __init__(self, store: Store, *, home: str | os.PathLike | None = None, worker_id: str | None = None,
                 concurrency: int = 1, poll_s: float = 1.0, heartbeat_timeout_s: float = 60.0,
                 max_attempts: int = 3, runner_cmd: list[str] | None = None, stop_grace_s: float = 600.0,
                 accelerate_config: str | None = None, max_deployments: int = 4,
                 serving_cmd: list[str] | None = None, deploy_timeout_s: float = 600.0):
        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
        if max_deployments < 0:
            raise ValueError(f"--max-deployments must be 0 or more, got {max_deployments}")
        if heartbeat_timeout_s <= poll_s:
            raise ValueError(f"--heartbeat-timeout ({heartbeat_timeout_s}) must exceed --poll ({poll_s}): "
                             "a live worker heartbeats once per poll")
        self.store = store
        self.home = felix_home(home).resolve()
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_attempts = max_attempts
        self.runner_cmd = list(runner_cmd) if runner_cmd else None
        self.stop_grace_s = stop_grace_s
        self.accelerate_config = str(Path(accelerate_config).resolve()) if accelerate_config else None
        self.max_deployments = max_deployments
        self.serving_cmd = list(serving_cmd) if serving_cmd else default_serving_cmd()
        self.deploy_timeout_s = deploy_timeout_s
        self.children: dict[str, _Child] = {}
        self.serving: dict[str, _Serving] = {}
        self._shutdown = threading.Event()
        self._shutdown_at: float | None = None
        self._last_requeue = 0.0
        self._last_heartbeat = 0.0
        self._last_serving_heartbeat = 0.0
        # heartbeats (and looks for stale jobs) four times per timeout, at most once per poll
        self.heartbeat_interval_s = max(poll_s, heartbeat_timeout_s / 4)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or `shutdown()`), then stop the children gracefully."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        log.info("worker %s: home %s, concurrency %d, store %s", self.worker_id, self.home, self.concurrency,
                 self.store.engine.url.render_as_string(hide_password=True))
        while True:
            try:
                self.tick()
            except DBAPIError as err:  # the database restarting or unreachable: keep the runs, retry
                log.warning("worker %s: store unavailable (%s); retrying in %.1fs", self.worker_id,
                            str(err).splitlines()[0], max(self.poll_s, 1.0))
                time.sleep(max(self.poll_s, 1.0))
                continue
            if not self._shutdown.is_set():
                self._shutdown.wait(self.poll_s)
            elif self.children or self.serving:
                time.sleep(min(self.poll_s, 0.2))
            else:
                break
        log.info("worker %s: stopped", self.worker_id)
        return 0

    def shutdown(self) -> None:
        """Stop claiming; children get SIGTERM (checkpoint, exit 75) on the next tick."""
        if not self._shutdown.is_set():
            self._shutdown_at = time.monotonic()
            self._shutdown.set()

    def _on_signal(self, signum, frame) -> None:  # noqa: ANN001
        if self._shutdown.is_set():
            log.warning("worker %s: second signal, killing children", self.worker_id)
            self._shutdown_at = -1e9  # grace over
        log.info("worker %s: signal %d, stopping children gracefully", self.worker_id, signum)
        self.shutdown()

    def tick(self) -> None:
        """One pass: recover stale jobs, reap children, heartbeat and mirror, forward stops, claim."""
        now = time.monotonic()
        if now - self._last_requeue >= self.heartbeat_interval_s:
            self._last_requeue = now
            for job_id, status in self.store.requeue_stale(timeout_s=self.heartbeat_timeout_s,
                                                           max_attempts=self.max_attempts).items():
                log.warning("job %s: its worker stopped heartbeating; now %s", job_id, status.value)
            for job_id, gone in self.store.recover_stale_deployments(timeout_s=self.heartbeat_timeout_s).items():
                log.warning("job %s: its serving worker %s stopped heartbeating; deploying it again", job_id, gone)
                self._log(JobFolder(job_id, self.home), "WARN", f"worker {gone} serving this model stopped "
                          f"heartbeating for {self.heartbeat_timeout_s:g}s; another worker deploys it again")
                self._set_file_status(JobFolder(job_id, self.home), JobStatus.COMPLETE)
        for child in list(self.children.values()):
            rc = child.proc.poll()
            if rc is not None:
                self._finish(child, rc)
        self._heartbeat()
        self._tend_deployments()
        if self._shutdown.is_set():
            self._stop_children()
            self._release_deployments()
            return
        while len(self.children) < self.concurrency:
            job = self.store.claim_job(worker_id=self.worker_id)
            if job is None:
                break
            self._start(job)
        while len(self.serving) < self.max_deployments:
            deployment = self.store.claim_deployment(worker_id=self.worker_id)
            if deployment is None:
                break
            self._start_serving(deployment)

    def drain(self, timeout_s: float = 60.0) -> None:
        """Run until the queue is empty and no child runs (tests, batch use). TimeoutError past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.tick()
            if not self.children and self.store.count_jobs(status=JobStatus.REQUESTED) == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.worker_id}: jobs still running after {timeout_s}s: "
                                   f"{sorted(self.children)}")
            time.sleep(min(self.poll_s, 0.05))

    # -- children -----------------------------------------------------------------------------
    def command_for(self, job: ClaimedJob, spec_path: Path) -> list[str]:
        """Always `python -m felix_train run`: for `engine.distributed.num_processes > 1` the runner
        relaunches itself under `accelerate launch` and returns rank 0's exit code (4 and 75 survive)."""
        prefix = list(self.runner_cmd) if self.runner_cmd is not None else default_runner_cmd()
        return [*prefix, str(spec_path), "--job-id", job.id, "--home", str(self.home)]

    def _child_env(self, job: ClaimedJob | str) -> dict[str, str]:
        env = dict(os.environ)
        env["FELIX_HOME"] = str(self.home)
        env["FELIX_JOB_ID"] = job if isinstance(job, str) else job.id
        env["FELIX_WORKER_ID"] = self.worker_id
        env["PYTHONUNBUFFERED"] = "1"
        if self.accelerate_config:
            env["FELIX_ACCELERATE_CONFIG"] = self.accelerate_config
        # `-m felix_train` must import this very package, installed or not
        package_root = str(Path(felix_train.__file__).resolve().parents[1])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if package_root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
        return env

    def _start(self, job: ClaimedJob) -> None:
        folder = JobFolder(job.id, self.home)
        try:
            folder.create()
            spec = dict(job.spec)
            spec["engine"] = {**(spec.get("engine") or {}), "job_id": job.id}
            spec_path = folder.root / REQUEST_FILE
            atomic_write_json(spec_path, spec)
            if job.stop_requested:  # a stop that arrived before a requeue still holds
                folder.request_stop()
            cmd = self.command_for(job, spec_path)
            out = open(folder.root / RUNNER_LOG, "ab")
            out.write(f"--- {utcnow()} worker {self.worker_id} attempt {job.attempts}: {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self._child_env(job), cwd=str(folder.root), start_new_session=True,
                                    preexec_fn=_set_parent_death_signal)
        except OSError as err:
            log.error("job %s: cannot start its run: %s", job.id, err)
            append_line(folder.log_path, f"{utcnow()} ERROR worker {self.worker_id} could not start the run: {err}")
            self.store.finish_job(job_id=job.id, worker_id=self.worker_id, status=JobStatus.FAILED,
                                  error={"type": type(err).__name__, "message": f"the worker could not start the "
                                         f"run: {err}", "where": "worker", "errors": []})
            return
        self.children[job.id] = _Child(job=job, folder=folder, proc=proc, out=out, stop_forwarded=job.stop_requested)
        log.info("job %s: started (pid %d, attempt %d)", job.id, proc.pid, job.attempts)

    def _signal_child(self, child: _Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)  # the child leads its own session: reach accelerate's ranks too
        except (ProcessLookupError, PermissionError):
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _stop_children(self) -> None:
        grace_over = self._shutdown_at is not None and time.monotonic() - self._shutdown_at > self.stop_grace_s
        for child in list(self.children.values()):
            if not child.terminated:
                self._signal_child(child, signal.SIGTERM)
                child.terminated = True
            elif grace_over:
                log.warning("job %s: no exit %ss after SIGTERM; killing it", child.job.id, self.stop_grace_s)
                self._signal_child(child, signal.SIGKILL)
                try:
                    child.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    continue
                self._finish(child, child.proc.returncode)

    def _heartbeat(self) -> None:
        if not self.children:
            return
        now = time.monotonic()
        touch = now - self._last_heartbeat >= self.heartbeat_interval_s
        if touch:
            self._last_heartbeat = now
        owned = self.store.heartbeat(worker_id=self.worker_id, job_ids=list(self.children), touch=touch)
        for job_id, child in list(self.children.items()):
            if job_id not in owned:
                # requeued (we missed heartbeats) or deleted: another run may own the folder now
                log.warning("job %s: no longer ours in the store; killing its run", job_id)
                self._signal_child(child, signal.SIGKILL)
                child.proc.wait()
                child.out.close()
                del self.children[job_id]
                continue
            if owned[job_id] and not child.stop_forwarded:
                child.folder.request_stop()
                child.stop_forwarded = True
                log.info("job %s: stop requested; forwarded to its run", job_id)
            self._mirror(child)

    def _mirror(self, child: _Child) -> None:
        try:
            st = child.folder.status_path.stat()
        except FileNotFoundError:
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # replaced atomically: a new inode each time
        if key == child.status_key:
            return
        child.status_key = key
        status = _read_status(child.folder)
        if not status:
            return
        self.store.update_progress(job_id=child.job.id, worker_id=self.worker_id, progress=status.get("progress"),
                                   started_at=_parse_time(status.get("started_at")))

    def _finish(self, child: _Child, rc: int) -> None:
        """Turn a child's exit code and status.json into the job's state in the store."""
        del self.children[child.job.id]
        child.out.close()
        status = _read_status(child.folder) or {}
        file_status = status.get("status")
        error = status.get("error")
        new: JobStatus
        if rc == EXIT_COMPLETE and file_status == JobStatus.COMPLETE.value:
            new = JobStatus.COMPLETE
        elif rc == EXIT_CANCELLED:
            new = JobStatus.CANCELLED
        elif rc == EXIT_PREEMPTED or (child.terminated and rc in (-signal.SIGTERM, -signal.SIGKILL)):
            # preempted (or killed by our shutdown before it could install its handler, or after the
            # grace period): the next run resumes from the last checkpoint. A stop requested before
            # the preemption still ends the job.
            stop = child.stop_forwarded or child.folder.stop_requested()
            new = JobStatus.CANCELLED if stop else JobStatus.REQUESTED
            if stop:
                child.folder.clear_stop()
            if rc != EXIT_PREEMPTED:
                append_line(child.folder.log_path, f"{utcnow()} WARN  worker {self.worker_id} stopped the run "
                            f"(signal {-rc}) before it checkpointed; {new.value}")
                if file_status == JobStatus.RUNNING.value:
                    status.update(status=new.value)
                    atomic_write_json(child.folder.status_path, status)
        elif rc in (EXIT_FAILED, EXIT_SPEC, EXIT_DATASET) and error:
            new = JobStatus.FAILED
        else:
            new = JobStatus.FAILED
            what = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            if rc == EXIT_COMPLETE:
                what += f" but status.json says {file_status!r}"
            message = f"the run ended with {what}; {RUNNER_LOG} in the job folder has its output"
            tail = _tail(child.folder.root / RUNNER_LOG, 20)
            append_line(child.folder.log_path, f"{utcnow()} ERROR worker {self.worker_id}: {message}")
            for line in tail:
                append_line(child.folder.log_path, f"{utcnow()} ERROR   | {line}")
            error = error or {"type": "RunnerExited", "message": message, "where": "worker", "errors": []}
            if file_status not in (None, JobStatus.FAILED.value):
                status.update(status=JobStatus.FAILED.value, finished_at=utcnow(), error=error)
                atomic_write_json(child.folder.status_path, status)
        ok = self.store.finish_job(
            job_id=child.job.id, worker_id=self.worker_id, status=new,
            error=error if new == JobStatus.FAILED else None,
            metrics=status.get("metrics") if new == JobStatus.COMPLETE else None,
            progress=status.get("progress"), started_at=_parse_time(status.get("started_at")),
            finished_at=_parse_time(status.get("finished_at")))
        if new in (JobStatus.CANCELLED,) and file_status != JobStatus.CANCELLED.value and status:
            status.update(status=JobStatus.CANCELLED.value, finished_at=status.get("finished_at") or utcnow())
            atomic_write_json(child.folder.status_path, status)
        log.info("job %s: run exited %s → %s%s", child.job.id, rc, new.value,
                 "" if ok else " (no longer ours: not recorded)")


    # -- deployments ---------------------------------------------------------------------------
    HEALTH_TIMEOUT_S = 2.0
    """How long one `GET /health` may take."""

    MAX_FAILED_CHECKS = 3
    """Health checks of a deployed process that may fail in a row before it is stopped as hung."""

    SERVING_STOP_GRACE_S = 10.0
    """How long an inference process gets to exit after SIGTERM before it is killed."""

    def _log(self, folder: JobFolder, level: str, message: str) -> None:
        """A line in the job's train.log (never recreating the folder of a deleted job)."""
        if folder.root.is_dir():
            append_line(folder.log_path, f"{utcnow()} {level:<5} {message}")

    def _set_file_status(self, folder: JobFolder, status: JobStatus) -> None:
        """Mirror a deployment change into status.json (`complete` <-> `deployed` only)."""
        current = _read_status(folder) if folder.root.is_dir() else None
        if current and current.get("status") in (JobStatus.COMPLETE.value, JobStatus.DEPLOYED.value) \
                and current.get("status") != status.value:
            current["status"] = status.value
            atomic_write_json(folder.status_path, current)

    def _start_serving(self, deployment: ClaimedDeployment) -> None:
        folder = JobFolder(deployment.job_id, self.home)
        old = self.serving.pop(deployment.job_id, None)
        if old is not None:  # withdrawn and requested again between two ticks: the old process goes first
            self._stop_serving(old)
        try:
            if not folder.model_dir.is_dir():
                raise FileNotFoundError(f"the job has no model/ folder at {folder.model_dir}")
            (folder.root / SERVING_FILE).unlink(missing_ok=True)
            cmd = [*self.serving_cmd, "--job-dir", str(folder.root), "--port", "0", "--host", SERVING_HOST]
            out = open(folder.root / SERVING_LOG, "ab")
            out.write(f"--- {utcnow()} worker {self.worker_id}: {shlex.join(cmd)}\n".encode())
            out.flush()
            env = self._child_env(deployment.job_id)
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(folder.root), start_new_session=True,
                                    preexec_fn=_set_parent_death_signal)
        except OSError as err:
            log.error("job %s: cannot start its inference process: %s", deployment.job_id, err)
            if self.store.end_deployment(job_id=deployment.job_id, deployment_id=deployment.deployment_id):
                self._log(folder, "ERROR", f"deploy failed: worker {self.worker_id} could not start the inference "
                          f"process: {err}; the job is `complete` again")
            return
        self.serving[deployment.job_id] = _Serving(deployment=deployment, folder=folder, proc=proc, out=out)
        self.store.set_serving_pid(job_id=deployment.job_id, deployment_id=deployment.deployment_id, pid=proc.pid)
        self._log(folder, "INFO", f"deploying: worker {self.worker_id} started the inference process (pid {proc.pid}); "
                  f"the job is `deployed` once it answers its health check")
        log.info("job %s: inference process started (pid %d)", deployment.job_id, proc.pid)

    def _tend_deployments(self) -> None:
        """Reap dead inference processes, heartbeat, stop withdrawn ones, health-check the others."""
        if not self.serving:
            return
        for srv in list(self.serving.values()):
            rc = srv.proc.poll()
            if rc is not None:
                what = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                if srv.healthy:
                    reason = f"the inference process (pid {srv.proc.pid}) died ({what})"
                else:
                    reason = f"the inference process (pid {srv.proc.pid}) exited ({what}) before it answered its health check"
                self._serving_failed(srv, reason)
        if not self.serving:
            return
        now = time.monotonic()
        touch = now - self._last_serving_heartbeat >= self.heartbeat_interval_s
        if touch:
            self._last_serving_heartbeat = now
        ours = self.store.deployment_heartbeat(
            deployments={job_id: srv.deployment.deployment_id for job_id, srv in self.serving.items()}, touch=touch)
        for job_id, srv in list(self.serving.items()):
            if job_id not in ours:  # undeployed, deleted, or recovered by another worker
                del self.serving[job_id]
                self._stop_serving(srv)
                try:
                    row = self.store.get_job(job_id=job_id)
                except JobNotFound:
                    row = None
                if row is not None and row.deployment_id is None and row.status == JobStatus.COMPLETE:
                    self._set_file_status(srv.folder, JobStatus.COMPLETE)
                self._log(srv.folder, "INFO", f"undeployed: worker {self.worker_id} stopped the inference process "
                          f"(pid {srv.proc.pid})")
                log.info("job %s: deployment withdrawn; inference process stopped", job_id)
                continue
            if not srv.healthy:
                self._await_health(srv)
            elif now - srv.last_check >= self.heartbeat_interval_s:
                srv.last_check = now
                if self._healthy(srv):
                    srv.failed_checks = 0
                else:
                    srv.failed_checks += 1
                    if srv.failed_checks >= self.MAX_FAILED_CHECKS:
                        self._serving_failed(srv, f"the inference process (pid {srv.proc.pid}) stopped answering its "
                                                  f"health check ({srv.failed_checks} checks in a row)")

    def _await_health(self, srv: _Serving) -> None:
        """A starting process: learn its port from serving.json, then mark it deployed once healthy."""
        if srv.port is None:
            info = read_json(srv.folder.root / SERVING_FILE, default=None) if srv.folder.root.is_dir() else None
            if isinstance(info, dict) and info.get("pid") == srv.proc.pid and isinstance(info.get("port"), int):
                srv.port = info["port"]
        if srv.port is not None and self._healthy(srv):
            dep = srv.deployment
            if self.store.mark_deployed(job_id=dep.job_id, deployment_id=dep.deployment_id, port=srv.port,
                                        pid=srv.proc.pid):
                srv.healthy, srv.last_check = True, time.monotonic()
                self._set_file_status(srv.folder, JobStatus.DEPLOYED)
                self._log(srv.folder, "INFO", f"deployed: serving on {SERVING_HOST}:{srv.port} (pid {srv.proc.pid}, "
                          f"worker {self.worker_id}) after {time.monotonic() - srv.started:.1f}s; "
                          f"POST /felix/trained-models/{dep.job_id}/predict")
                log.info("job %s: deployed on port %d", dep.job_id, srv.port)
            return
        if time.monotonic() - srv.started > self.deploy_timeout_s:
            self._serving_failed(srv, f"the inference process (pid {srv.proc.pid}) did not answer its health check "
                                      f"within {self.deploy_timeout_s:g}s")

    def _healthy(self, srv: _Serving) -> bool:
        try:
            status, body = get_json(SERVING_HOST, srv.port, "/health", timeout_s=self.HEALTH_TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return status == 200 and body.get("status") == "ok" and body.get("job_id") == srv.job_id

    def _stop_serving(self, srv: _Serving) -> int | None:
        """SIGTERM the inference process, SIGKILL it after the grace period; its exit code."""
        for sig, wait_s in ((signal.SIGTERM, self.SERVING_STOP_GRACE_S), (signal.SIGKILL, 10.0)):
            if srv.proc.poll() is not None:
                break
            try:
                os.killpg(srv.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                try:
                    srv.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            try:
                srv.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        srv.out.close()
        return srv.proc.poll()

    def _serving_failed(self, srv: _Serving, reason: str) -> None:
        """The process died, hung or never became healthy: stop it, job back to `complete`, reason in train.log."""
        self.serving.pop(srv.job_id, None)
        self._stop_serving(srv)
        dep = srv.deployment
        if not self.store.end_deployment(job_id=dep.job_id, deployment_id=dep.deployment_id):
            log.info("job %s: %s (deployment already withdrawn)", dep.job_id, reason)
            return
        self._set_file_status(srv.folder, JobStatus.COMPLETE)
        self._log(srv.folder, "ERROR", f"{'undeployed' if srv.healthy else 'deploy failed'}: {reason}; the job is "
                  f"`complete` again (POST /felix/training-jobs/{dep.job_id}/deploy to serve it again); "
                  f"{SERVING_LOG} in the job folder has the process' output")
        tail = _tail(srv.folder.root / SERVING_LOG, 20)
        starts = [i for i, line in enumerate(tail) if line.startswith("--- ")]
        for line in tail[starts[-1] + 1 if starts else 0:]:  # this process' output only
            self._log(srv.folder, "ERROR", f"  | {line}")
        log.warning("job %s: %s; complete again", dep.job_id, reason)

    def _release_deployments(self) -> None:
        """Shutdown: stop every inference process and hand its deployment back for another worker."""
        for srv in list(self.serving.values()):
            del self.serving[srv.job_id]
            self._stop_serving(srv)
            dep = srv.deployment
            if self.store.end_deployment(job_id=dep.job_id, deployment_id=dep.deployment_id, keep_request=True):
                self._set_file_status(srv.folder, JobStatus.COMPLETE)
                self._log(srv.folder, "WARN", f"worker {self.worker_id} is stopping: inference process stopped; "
                          "the deployment waits for another worker (the job is `complete` until it serves again)")
            log.info("job %s: deployment handed back", dep.job_id)


def _read_status(folder: JobFolder) -> dict | None:
    from felix_train.jobs import read_json

    try:
        return read_json(folder.status_path)
    except ValueError:  # never half-written (atomic), but be safe against foreign writers
        return None


def _tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 8192, 0))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []
    return lines[-n:]


# -- `felix-train worker` ----------------------------------------------------------------------------


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
                   help="runs of a job whose worker died before it is failed (default 3)")
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
    store = Store(args.database_url, home=home)
    try:
        worker = Worker(store, home=home, worker_id=args.worker_id, concurrency=args.concurrency, poll_s=args.poll,
                        heartbeat_timeout_s=args.heartbeat_timeout, max_attempts=args.max_attempts,
                        runner_cmd=shlex.split(args.runner_cmd) if args.runner_cmd else None,
                        stop_grace_s=args.stop_grace, accelerate_config=args.accelerate_config,
                        max_deployments=args.max_deployments, deploy_timeout_s=args.deploy_timeout)
    except ValueError as err:
        print(str(err), file=sys.stderr)
        return 2
    try:
        return worker.run()
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
