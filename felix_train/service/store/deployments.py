"""The store's queries for deployments, which live on the job's row (DESIGN.md's sixth status, `deployed`).

`deploy_requested` is what the user asked for; `deployment_id`, `serving_worker`, `serving_pid`,
`serving_port` and `serving_heartbeat_at` say which worker's inference process serves it. A
worker claims a requested deployment (`claim_deployment`), and every later write of that worker
is fenced by the `deployment_id` it got, so an undeploy, a delete or a recovery by another
worker always wins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from felix_train.jobs import JobStatus
from felix_train.service.store.errors import Conflict
from felix_train.service.store.jobs import JobQueries
from felix_train.service.store.schema import Job, utcnow

NO_DEPLOYMENT: dict[str, Any] = {"deployment_id": None, "serving_worker": None, "serving_pid": None,
                                 "serving_port": None, "serving_heartbeat_at": None}
"""The deployment columns of a job no worker serves."""


@dataclass(frozen=True)
class ClaimedDeployment:
    """What a worker needs to serve a job: the job and the `deployment_id` that fences its writes."""

    job_id: str
    deployment_id: str
    owner_id: int
    spec: dict


class DeploymentQueries(JobQueries):
    """Deployments: requested through the API, claimed, served and handed back by workers."""

    # -- deployments: the API side --------------------------------------------------------------
    def request_deploy(self, *, job_id: str, owner_id: int | None) -> Job:
        """Ask the workers to serve a `complete` job (idempotent while the deployment is pending).

        The job stays `complete` with `deploy_requested` until a worker's inference process
        answers its health check; then it is `deployed`. `owner_id=None` is an operator (the CLI).

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is not `complete` (already `deployed`, or not trained yet).
        """
        where = [Job.id == job_id, Job.status == JobStatus.COMPLETE, Job.deploy_requested.is_(False)]
        if owner_id is not None:
            where.append(Job.owner_id == owner_id)
        self.get_job(job_id=job_id, owner_id=owner_id)  # JobNotFound first (and for malformed ids)
        with self.writing() as s:
            s.execute(update(Job).where(*where).values(deploy_requested=True, updated_at=utcnow()))
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        if job.status == JobStatus.DEPLOYED:
            raise Conflict(f"job {job_id} is already `deployed`; `POST /felix/trained-models/{job_id}/predict` "
                           f"uses it, `POST /felix/training-jobs/{job_id}/undeploy` stops it")
        if job.status != JobStatus.COMPLETE:
            raise Conflict(f"job {job_id} is `{job.status.value}`; only a `complete` job can be deployed")
        return job

    def request_undeploy(self, *, job_id: str, owner_id: int | None) -> Job:
        """Stop serving a job: it is `complete` again at once, and its worker stops the inference process.

        Also cancels a deployment that is still pending.

        Raises:
            JobNotFound: no such job for this user.
            Conflict: the job is neither `deployed` nor waiting to be.
        """
        where = [Job.id == job_id, Job.deploy_requested.is_(True),
                 Job.status.in_([JobStatus.COMPLETE, JobStatus.DEPLOYED])]
        if owner_id is not None:
            where.append(Job.owner_id == owner_id)
        self.get_job(job_id=job_id, owner_id=owner_id)
        with self.writing() as s:
            done = s.execute(update(Job).where(*where).values(status=JobStatus.COMPLETE, deploy_requested=False,
                                                               updated_at=utcnow(), **NO_DEPLOYMENT))
        job = self.get_job(job_id=job_id, owner_id=owner_id)
        if done.rowcount == 0:
            raise Conflict(f"job {job_id} is `{job.status.value}` and not deployed; nothing to undeploy")
        return job

    # -- deployments: the worker side -----------------------------------------------------------
    def claim_deployment(self, *, worker_id: str) -> ClaimedDeployment | None:
        """Take the oldest pending deployment (`complete`, `deploy_requested`, no worker) for `worker_id`.

        The job stays `complete` until `mark_deployed`. Returns None when nothing waits.
        """
        pending = [Job.status == JobStatus.COMPLETE, Job.deploy_requested.is_(True), Job.deployment_id.is_(None)]
        with self.reading() as s:
            if s.scalar(select(Job.id).where(*pending).limit(1)) is None:
                return None
        now = utcnow()
        deployment_id = str(uuid.uuid4())
        values = {"deployment_id": deployment_id, "serving_worker": worker_id, "serving_heartbeat_at": now,
                  "serving_pid": None, "serving_port": None, "updated_at": now}
        with self.writing() as s:
            if self.is_sqlite:
                oldest = select(Job.id).where(*pending).order_by(Job.updated_at, Job.id).limit(1).scalar_subquery()
                job_id = s.scalar(update(Job).where(Job.id == oldest, *pending).values(**values).returning(Job.id))
            else:
                job_id = s.scalar(select(Job.id).where(*pending).order_by(Job.updated_at, Job.id).limit(1)
                                  .with_for_update(skip_locked=True))
                if job_id is not None:
                    s.execute(update(Job).where(Job.id == job_id).values(**values))
            if job_id is None:
                return None
            row = s.execute(select(Job.owner_id, Job.spec).where(Job.id == job_id)).one()
        return ClaimedDeployment(job_id=job_id, deployment_id=deployment_id, owner_id=row.owner_id, spec=row.spec)

    def set_serving_pid(self, *, job_id: str, deployment_id: str, pid: int) -> bool:
        """Record the inference process of a claimed deployment; False when it is no longer this deployment."""
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id)
                             .values(serving_pid=pid, serving_heartbeat_at=utcnow()))
        return done.rowcount == 1

    def mark_deployed(self, *, job_id: str, deployment_id: str, port: int, pid: int) -> bool:
        """The inference process answered its health check: the job is `deployed` on `port`.

        Returns False when the deployment was withdrawn meanwhile (undeployed, deleted, recovered).
        """
        now = utcnow()
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id,
                                               Job.deploy_requested.is_(True), Job.status == JobStatus.COMPLETE)
                             .values(status=JobStatus.DEPLOYED, serving_port=port, serving_pid=pid,
                                     serving_heartbeat_at=now, updated_at=now))
        return done.rowcount == 1

    def deployment_heartbeat(self, *, deployments: dict[str, str], touch: bool = True) -> set[str]:
        """Refresh a worker's deployments (`{job_id: deployment_id}`); only read them when `touch` is False.

        Returns the job ids still served under those deployment ids. A job missing from it was
        undeployed, deleted or recovered by another worker: its process must stop.
        """
        if not deployments:
            return set()
        owned = [Job.id.in_(list(deployments)), Job.deployment_id.in_(list(deployments.values()))]
        with (self.writing() if touch else self.reading()) as s:
            if touch:
                s.execute(update(Job).where(*owned).values(serving_heartbeat_at=utcnow()))
            rows = s.execute(select(Job.id, Job.deployment_id).where(*owned)).all()
        return {r.id for r in rows if deployments.get(r.id) == r.deployment_id}

    def end_deployment(self, *, job_id: str, deployment_id: str, keep_request: bool = False) -> bool:
        """The deployment's process is gone: the job is `complete` again.

        `keep_request=True` (the worker is shutting down) leaves `deploy_requested` set, so another
        worker serves it; False (the process died or never became healthy) clears it.
        Returns False when the deployment was no longer this one.
        """
        with self.writing() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.deployment_id == deployment_id,
                                               Job.status.in_([JobStatus.COMPLETE, JobStatus.DEPLOYED]))
                             .values(status=JobStatus.COMPLETE, deploy_requested=keep_request, updated_at=utcnow(),
                                     **NO_DEPLOYMENT))
        return done.rowcount == 1

    def recover_stale_deployments(self, *, timeout_s: float) -> dict[str, str | None]:
        """Hand back deployments whose worker stopped heartbeating for `timeout_s` (it died).

        The job is `complete` again with `deploy_requested` kept, so a live worker serves it anew.
        Returns `{job_id: the worker that was serving it}`.
        """
        now = utcnow()
        stale = [Job.deployment_id.is_not(None), Job.serving_heartbeat_at < now - timedelta(seconds=timeout_s)]
        out: dict[str, str | None] = {}
        with self.writing() as s:
            rows = s.execute(select(Job.id, Job.serving_worker, Job.status).where(*stale)
                             .with_for_update(skip_locked=True)).all()
            for r in rows:
                status = JobStatus.COMPLETE if r.status == JobStatus.DEPLOYED else r.status
                done = s.execute(update(Job).where(Job.id == r.id, *stale)
                                 .values(status=status, updated_at=now, **NO_DEPLOYMENT))
                if done.rowcount == 1:
                    out[r.id] = r.serving_worker
        return out

