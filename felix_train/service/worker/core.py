"""`Worker`: the loop that claims queued jobs and pending deployments and supervises both.

Each tick recovers the jobs and deployments of dead workers, reaps and heartbeats this worker's
runs (`runs.py`) and inference processes (`deployments.py`), then claims more up to its limits.
On SIGTERM (or SIGINT) it stops claiming, sends SIGTERM to its runs (they checkpoint and exit 75,
and their jobs go back to `requested`), stops its inference processes (their deployments wait
for another worker), waits for them, and exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from sqlalchemy.exc import DBAPIError

from felix_train.jobs import JobStatus
from felix_train.service.worker.deployments import DeploymentSupervisor
from felix_train.service.worker.runs import RunSupervisor

log = logging.getLogger("felix_train.worker")


class Worker(RunSupervisor, DeploymentSupervisor):
    """Runs up to `concurrency` jobs at once from `store`, their folders under `home`, and serves up to
    `max_deployments` deployed models.

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
            self._recover_stale_deployments()
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

