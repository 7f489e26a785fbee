"""The worker's deployment supervisor: one inference process per deployed job, health-checked.

The worker claims a pending deployment (`POST /felix/training-jobs/{id}/deploy`) from the store
and starts the job's inference process

    python -m felix_train.service.serving --job-dir jobs/<id> --port 0

(output in `jobs/<id>/serving.log`; the process writes the port it bound to `jobs/<id>/serving.json`),
with a fresh per-deployment secret in its environment (`FELIX_SERVING_SECRET`, never on its command line)
and in `jobs/<id>/serving-<deployment_id>.secret` (0600) for the API (`felix_train.service.serving.auth`).
The job becomes `deployed`, with that port in the store, only once the process answers
`GET /health` (asked with the secret). While it serves, the worker heartbeats the deployment and

- stops the process when the deployment is withdrawn (undeployed, deleted, or recovered by
  another worker after a missed heartbeat): the store's `deployment_id` no longer matches;
- puts the job back to `complete` when the process dies, stops answering its health check,
  or never becomes healthy within `--deploy-timeout`, with the reason and the tail of
  `serving.log` in the job's train.log (a new `POST .../deploy` starts it again);
- on shutdown, stops its serving processes and hands their deployments back (the jobs stay
  requested for deployment, and another worker serves them).

Whenever a process is stopped, its secret file goes with it.

status.json follows (`complete` <-> `deployed`), written through `JobFolder.update_state` (each change a
`status_changed` event); a process that becomes healthy adds a `deployed` event with the deployment id.
"""

from __future__ import annotations

import http.client
import logging
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO

from felix_train.errors import JobNotFound
from felix_train.events import EventType, append_event
from felix_train.jobs import JobFolder, JobStatus, read_json, utcnow
from felix_train.service.serving.auth import (
    SECRET_ENV,
    auth_headers,
    new_secret,
    remove_deployment_secret,
    write_deployment_secret,
)
from felix_train.service.serving.protocol import SERVING_FILE, SERVING_HOST, SERVING_LOG, get_json
from felix_train.service.store import ClaimedDeployment
from felix_train.service.worker.base import WorkerBase, read_state, set_parent_death_signal, signal_group, tail

log = logging.getLogger("felix_train.worker")


@dataclass
class _Serving:
    """A deployment this worker serves: the job's inference process."""

    deployment: ClaimedDeployment
    folder: JobFolder
    proc: subprocess.Popen
    out: IO[bytes]
    secret: str = field(repr=False, default="")  # the deployment's: the process answers only requests carrying it
    started: float = field(default_factory=time.monotonic)
    port: int | None = None
    healthy: bool = False
    failed_checks: int = 0
    last_check: float = 0.0

    @property
    def job_id(self) -> str:
        return self.deployment.job_id


class DeploymentSupervisor(WorkerBase):
    """Starts, health-checks, stops and hands back the inference processes of this worker's deployments."""

    HEALTH_TIMEOUT_S = 2.0
    """How long one `GET /health` may take."""

    MAX_FAILED_CHECKS = 3
    """Health checks of a deployed process that may fail in a row before it is stopped as hung."""

    SERVING_STOP_GRACE_S = 10.0
    """How long an inference process gets to exit after SIGTERM before it is killed."""


    def _set_file_status(self, folder: JobFolder, status: JobStatus) -> None:
        """Mirror a deployment change into status.json (`complete` <-> `deployed` only)."""
        current = read_state(folder) if folder.root.is_dir() else None
        if current is not None and current.status in (JobStatus.COMPLETE.value, JobStatus.DEPLOYED.value) \
                and current.status != status.value:
            folder.update_state(status=status)

    def _recover_stale_deployments(self) -> None:
        """Hand back the deployments of workers that stopped heartbeating (another worker serves them anew)."""
        for job_id, gone in self.store.recover_stale_deployments(timeout_s=self.heartbeat_timeout_s).items():
            log.warning("job %s: its serving worker %s stopped heartbeating; deploying it again", job_id, gone)
            self._log(JobFolder(job_id, self.home), "WARN", f"worker {gone} serving this model stopped "
                      f"heartbeating for {self.heartbeat_timeout_s:g}s; another worker deploys it again")
            self._set_file_status(JobFolder(job_id, self.home), JobStatus.COMPLETE)

    def _start_serving(self, deployment: ClaimedDeployment) -> None:
        folder = JobFolder(deployment.job_id, self.home)
        old = self.serving.pop(deployment.job_id, None)
        if old is not None:  # withdrawn and requested again between two ticks: the old process goes first
            self._stop_serving(old)
        secret = new_secret()
        try:
            if not folder.model_dir.is_dir():
                raise FileNotFoundError(f"the job has no model/ folder at {folder.model_dir}")
            (folder.root / SERVING_FILE).unlink(missing_ok=True)
            write_deployment_secret(folder.root, deployment.deployment_id, secret)
            cmd = [*self.serving_cmd, "--job-dir", str(folder.root), "--port", "0", "--host", SERVING_HOST]
            out = open(folder.root / SERVING_LOG, "ab")
            out.write(f"--- {utcnow()} worker {self.worker_id}: {shlex.join(cmd)}\n".encode())
            out.flush()
            env = {**self._child_env(deployment.job_id), SECRET_ENV: secret}  # not in argv: /proc/*/cmdline is public
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(folder.root), start_new_session=True,
                                    preexec_fn=set_parent_death_signal)
        except OSError as err:
            log.error("job %s: cannot start its inference process: %s", deployment.job_id, err)
            if folder.root.is_dir():
                remove_deployment_secret(folder.root, deployment.deployment_id)
            if self.store.end_deployment(job_id=deployment.job_id, deployment_id=deployment.deployment_id):
                self._log(folder, "ERROR", f"deploy failed: worker {self.worker_id} could not start the inference "
                          f"process: {err}; the job is `complete` again")
            return
        self.serving[deployment.job_id] = _Serving(deployment=deployment, folder=folder, proc=proc, out=out,
                                                   secret=secret)
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
                if srv.folder.root.is_dir():
                    append_event(srv.folder.root, EventType.DEPLOYED, {"deployment_id": dep.deployment_id,
                                                                      "status": JobStatus.DEPLOYED.value})
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
            status, body = get_json(SERVING_HOST, srv.port, "/health", headers=auth_headers(srv.secret),
                                    timeout_s=self.HEALTH_TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return status == 200 and body.get("status") == "ok" and body.get("job_id") == srv.job_id

    def _stop_serving(self, srv: _Serving) -> int | None:
        """SIGTERM the inference process, SIGKILL it after the grace period, remove its secret; its exit code."""
        for sig, wait_s in ((signal.SIGTERM, self.SERVING_STOP_GRACE_S), (signal.SIGKILL, 10.0)):
            if srv.proc.poll() is not None:
                break
            signal_group(srv.proc, sig)
            try:
                srv.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        srv.out.close()
        remove_deployment_secret(srv.folder.root, srv.deployment.deployment_id)
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
        lines = tail(srv.folder.root / SERVING_LOG, 20)
        starts = [i for i, line in enumerate(lines) if line.startswith("--- ")]
        for line in lines[starts[-1] + 1 if starts else 0:]:  # this process' output only
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
