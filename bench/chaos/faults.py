"""The fault run: uninterrupted reference jobs, then the scheduled jobs under two workers, faults fired at their steps.

Everything goes through the real pieces: jobs are submitted with the API's `submit_job` into one SQLite
store under a temp `$FELIX_HOME`, run by `python -m felix_train.service.worker` processes, stopped with
`Store.request_stop`. The loop polls the store, /proc and each job's status.json a few times a second,
fires a job's next fault once its current run has trained to the fault's step, keeps two workers
running, and ends when every job has ended (or at the deadline); `Fleet.close()` then ends every
process the run started, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.procs import Fleet, proc_table
from bench.chaos.schedule import RUN_ENDING, Fault, FaultKind, JobKind, JobPlan, job_spec

TERMINAL = ("complete", "failed", "cancelled", "deployed")


@dataclass
class ChaosConfig:
    jobs: int = 20
    faults: int = 30
    seed: int = 0
    steps: int = 40
    save_steps: int = 5
    refs: int = 2
    """Uninterrupted reference jobs per kind (they must agree with each other, too)."""
    workers: int = 2
    max_attempts: int = 5
    heartbeat_timeout_s: float = 10.0


def _say(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _statuses(store, ids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    from felix_train.service.store import Job

    with store.reading() as s:
        return {r.id: r.status.value for r in s.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))}


def _file_state(home: Path, job_id: str) -> tuple[str | None, int | None]:
    """status.json's status and progress step (None, None while unreadable)."""
    try:
        with open(home / "jobs" / job_id / "status.json", encoding="utf-8") as fh:
            data = json.load(fh)
        return data.get("status"), int((data.get("progress") or {}).get("step") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None, None


class FaultRun:
    """One fault run over `home` (a fresh folder); `run(deadline)` returns what happened, for `audit`."""

    def __init__(self, cfg: ChaosConfig, home: Path, plans: list[JobPlan]):
        from felix_train.data.registry import DatasetRegistry
        from felix_train.service.api.config import Settings
        from felix_train.service.store import Store

        self.cfg, self.home, self.plans = cfg, home, plans
        self.db_url = f"sqlite:///{home / 'felix.db'}"
        self.store = Store(self.db_url, home=home)
        self.settings = Settings(home=home, database_url=self.db_url, rate_limit_per_minute=1_000_000)
        self.registry = DatasetRegistry(home)
        self.users = [self.store.create_user(name=f"chaos-{i}")[0] for i in range(3)]
        (home / "logs").mkdir(parents=True, exist_ok=True)
        self.fleet = Fleet(home=home, db_url=self.db_url, logs=home / "logs", workers=cfg.workers,
                           max_attempts=cfg.max_attempts, heartbeat_timeout_s=cfg.heartbeat_timeout_s)
        self.refs: dict[str, JobKind] = {}
        self.load: list[tuple[float, float]] = []
        self.started = time.monotonic()

    def submit(self, kind: JobKind, user_index: int, name: str) -> str:
        from felix_train.service.api.submission import submit_job

        spec = job_spec(kind, max_steps=self.cfg.steps, save_steps=self.cfg.save_steps, seed=42)
        spec["name"] = name
        user = self.users[user_index % len(self.users)]
        return submit_job(payload=spec, user=user, store=self.store, settings=self.settings,
                          registry=self.registry).id

    # -- the run --------------------------------------------------------------------------------
    def run(self, deadline: float) -> dict:
        out: dict = {"phases": {}}
        try:
            self.fleet.start()
            t0 = time.monotonic()
            for i in range(self.cfg.refs * 2):  # llm, gliner2, llm, ...: each worker builds one model first
                kind = JobKind.LLM if i % 2 == 0 else JobKind.GLINER2
                self.refs[self.submit(kind, i, f"ref-{kind.value}-{i // 2}")] = kind
            _say(f"{len(self.refs)} uninterrupted reference jobs submitted")
            out["refs_finished"] = self._wait_refs(deadline)
            out["phases"]["refs_s"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            for plan in self.plans:
                plan.owner_id = self.users[plan.index % len(self.users)].id
                plan.job_id = self.submit(plan.kind, plan.index, f"chaos-{plan.index:02d}-{plan.kind.value}")
            _say(f"{len(self.plans)} jobs submitted with {sum(len(p.faults) for p in self.plans)} faults")
            out["finished"] = self._loop(deadline)
            out["phases"]["chaos_s"] = round(time.monotonic() - t0, 1)
            out["strays"] = self.fleet.strays()
        finally:
            out["killed_at_close"] = self.fleet.close()
            out["dup_runs"] = [{"job_id": job_id, "rc": p.returncode, "log_tail": _tail(log, 6)}
                               for job_id, p, log in self.fleet.dup_runs]
            out["worker_restarts"] = self.fleet.restarts
            out["worker_unexpected_exits"] = self.fleet.unexpected_exits
            out["worker_drain_timeouts"] = self.fleet.drain_timeouts
            out["load1"] = self.load
        return out

    def _sample_load(self) -> None:
        now = time.monotonic() - self.started
        if not self.load or now - self.load[-1][0] >= 10:
            self.load.append((round(now, 1), round(os.getloadavg()[0], 2)))

    def _wait_refs(self, deadline: float) -> bool:
        ids = list(self.refs)
        while time.monotonic() < deadline:
            self.fleet.tend()
            self._sample_load()
            if all(s in TERMINAL for s in _statuses(self.store, ids).values()):
                return True
            time.sleep(0.5)
        return False

    def _loop(self, deadline: float) -> bool:
        pending = {p.job_id: deque(p.faults) for p in self.plans}
        plan_of = {p.job_id: p for p in self.plans}
        first_step: dict[tuple[str, int], int | None] = {}
        last_report = 0.0
        while time.monotonic() < deadline:
            self.fleet.tend()
            self._sample_load()
            statuses = _statuses(self.store, list(pending))
            runs = self.fleet.runs(proc_table())
            for job_id, queue in pending.items():
                if queue and statuses.get(job_id) in TERMINAL:
                    for f in queue:
                        f.outcome = f"skipped: job {statuses[job_id]} before step {f.step}"
                    queue.clear()
                if not queue or job_id not in runs:
                    continue
                pid, ws = runs[job_id]
                file_status, step = _file_state(self.home, job_id)
                first = first_step.setdefault((job_id, pid), step)
                if queue[0].kind == FaultKind.DUP_RUN:
                    if file_status != "running":
                        continue  # a second run while the worker's run is up (starting or training)
                elif step is None or step == first or step < queue[0].step:
                    continue  # this run has not trained yet (or not far enough)
                fault = queue.popleft()
                self._fire(fault, plan_of[job_id], pid, ws, step)
                if fault.kind in (FaultKind.KILL_WORKER, FaultKind.TERM_WORKER):
                    break  # the worker table changed: look again
            done = all(s in TERMINAL for s in statuses.values()) and not any(pending.values())
            if done and not self.fleet.dup_runs_alive() and not any(
                    ws.draining_since for ws in self.fleet.slots.values() if ws.proc.poll() is None):
                return True
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
                fired = sum(f.fired_at is not None for p in self.plans for f in p.faults)
                _say(f"{time.monotonic() - self.started:.0f}s: {counts}, {fired} faults fired, "
                     f"load {os.getloadavg()[0]:.1f}")
            time.sleep(0.2)
        for queue in pending.values():
            for f in queue:
                f.outcome = "skipped: deadline"
        return False

    def _fire(self, fault: Fault, plan: JobPlan, pid: int, ws, step: int) -> None:
        fault.fired_at = round(time.monotonic() - self.started, 2)
        fault.detail = {"at_step": step, "runner_pid": pid, "worker": ws.worker_id}
        fault.outcome = "fired"
        if fault.kind == FaultKind.KILL_RUN:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                fault.outcome = "missed: the run had exited"
        elif fault.kind == FaultKind.KILL_WORKER:
            self.fleet.kill_worker(ws)
        elif fault.kind == FaultKind.TERM_WORKER:
            self.fleet.term_worker(ws)
        elif fault.kind == FaultKind.STOP:
            from felix_train.service.store import Conflict

            try:
                self.store.request_stop(job_id=plan.job_id, owner_id=plan.owner_id)
                fault.outcome = "accepted"
            except Conflict as err:
                fault.outcome = f"refused: {err}"
        elif fault.kind == FaultKind.DUP_SUBMIT:
            self._dup_submit(fault, plan)
        elif fault.kind == FaultKind.DUP_RUN:
            proc = self.fleet.start_dup_run(plan.job_id, self.home / "jobs" / plan.job_id / "request.json")
            fault.detail["dup_pid"] = proc.pid
        _say(f"fault {fault.index} {fault.kind.value} on {plan.job_id[:12]} ({plan.kind.value}) at step {step}: "
             f"{fault.outcome}")

    def _dup_submit(self, fault: Fault, plan: JobPlan) -> None:
        before = self.store.get_job(job_id=plan.job_id)
        try:
            self.store.create_job(owner_id=plan.owner_id, name=before.name, spec=before.spec, job_id=plan.job_id)
            fault.outcome = "accepted"
        except Exception as err:  # noqa: BLE001 - what the store raises is what is measured
            fault.outcome = f"refused: {type(err).__name__}"
        after = self.store.get_job(job_id=plan.job_id)
        fault.detail["row_kept"] = (after.created_at, after.spec, after.owner_id) == (
            before.created_at, before.spec, before.owner_id)


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []
