"""The worker's run supervisor: each claimed job runs in a child process, watched until it exits.

For each claimed job the worker writes the job's spec to `jobs/<id>/request.json` and starts

    python -m felix_train run jobs/<id>/request.json --job-id ID --home HOME

(the runner itself relaunches under `accelerate launch` when the spec's
`engine.distributed.num_processes` is above 1; its output goes to `jobs/<id>/runner.log`).
While a child runs, the worker heartbeats the job in the store and mirrors `status.json`'s
progress into it, forwards a stop request (`stop_requested` → the job folder's `STOP` file), and
kills the child if the job is no longer its own (requeued after a missed heartbeat: two runs
never share a job folder). When the child exits, `felix_train.jobs.status_after_exit` turns its
exit code and `status.json` into the job's state: 0 complete, 1/2/3 failed, 4 cancelled, 5 busy (another run
holds the folder: requeued, folder untouched),
75 preempted (back to `requested`).

A run killed by a signal (not the worker's own shutdown: an OOM kill, a node drain) or preempted
goes back to `requested` too (a `restarted` event `{attempt, reason}` in events.jsonl), and its next
run resumes from its last checkpoint, keeping its logs and checkpoints, until the job has had `max_attempts` runs; then it is `failed` with a stable
`error.code` (`RunErrorCode`): `out_of_memory` when the kernel's OOM killer did it (the worker's
cgroup's `oom_kill` counter went up while the run ran), `killed` for another signal,
`preempted_too_often` when the last run was preempted. Runs this worker stopped itself (its own
shutdown) are always requeued.
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from felix_train.jobs import (
    ExitCode,
    JobFolder,
    JobStatus,
    append_line,
    atomic_write_json,
    status_after_exit,
    utcnow,
)
from felix_train.checkpoints import list_checkpoints
from felix_train.events import EventLevel, EventType, append_event
from felix_train.service.store import ClaimedJob, RunErrorCode
from felix_train.service.worker.base import (
    WorkerBase,
    default_runner_cmd,
    oom_kills,
    parse_time,
    read_state,
    set_parent_death_signal,
    signal_group,
    tail,
)

log = logging.getLogger("felix_train.worker")

RUNNER_LOG = "runner.log"
"""The child's stdout/stderr, in the job folder (beside the contract's files)."""

REQUEST_FILE = "request.json"
"""The spec as the store holds it, written by the worker for the child to run."""


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
    oom_kills_at_start: int | None = None


class RunSupervisor(WorkerBase):
    """Starts claimed jobs as children, heartbeats and mirrors them, and records how each ended."""

    def command_for(self, job: ClaimedJob, spec_path: Path) -> list[str]:
        """Always `python -m felix_train run`: for `engine.distributed.num_processes > 1` the runner
        relaunches itself under `accelerate launch` and returns rank 0's exit code (4 and 75 survive)."""
        prefix = list(self.runner_cmd) if self.runner_cmd is not None else default_runner_cmd()
        return [*prefix, str(spec_path), "--job-id", job.id, "--home", str(self.home)]

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
            oom_at_start = oom_kills(self.memory_events_path)
            out = open(folder.root / RUNNER_LOG, "ab")
            out.write(f"--- {utcnow()} worker {self.worker_id} attempt {job.attempts}: {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self._child_env(job.id), cwd=str(folder.root), start_new_session=True,
                                    preexec_fn=set_parent_death_signal)
        except OSError as err:
            log.error("job %s: cannot start its run: %s", job.id, err)
            append_line(folder.log_path, f"{utcnow()} ERROR worker {self.worker_id} could not start the run: {err}")
            self.store.finish_job(job_id=job.id, worker_id=self.worker_id, status=JobStatus.FAILED,
                                  error={"code": RunErrorCode.RUN_NOT_STARTED.value, "type": type(err).__name__,
                                         "message": f"the worker could not start the run: {err}", "where": "worker",
                                         "errors": []})
            return
        self.children[job.id] = _Child(job=job, folder=folder, proc=proc, out=out, stop_forwarded=job.stop_requested,
                                       oom_kills_at_start=oom_at_start)
        log.info("job %s: started (pid %d, attempt %d)", job.id, proc.pid, job.attempts)

    def _signal_child(self, child: _Child, sig: int) -> None:
        signal_group(child.proc, sig)

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
        state = read_state(child.folder)
        if state is None:
            return
        self.store.update_progress(job_id=child.job.id, worker_id=self.worker_id, progress=_progress(state),
                                   started_at=parse_time(state.started_at))

    def _finish(self, child: _Child, rc: int) -> None:
        """Turn a child's exit code and status.json into the job's state in the store (`status_after_exit`)."""
        del self.children[child.job.id]
        child.out.close()
        if rc == ExitCode.BUSY:
            # another run holds the job folder (one this worker lost and has not yet seen die, or one started
            # by hand): this run touched nothing, so neither does the worker; requeue, and the next run finds
            # the job complete or resumes it
            ok = self.store.finish_job(job_id=child.job.id, worker_id=self.worker_id, status=JobStatus.REQUESTED)
            log.warning("job %s: another run holds its folder (exit 5); requeued%s", child.job.id,
                        "" if ok else " (no longer ours: not recorded)")
            return
        state = read_state(child.folder)
        file_status = state.status if state is not None else None
        error = state.error.model_dump(mode="json") if state is not None and state.error is not None else None
        stop = child.stop_forwarded or child.folder.stop_requested()
        new = status_after_exit(rc, file_status=file_status, stop_requested=stop, terminated=child.terminated)
        if rc < 0 and new == JobStatus.FAILED:  # killed, not by us: an OOM kill, a node drain, an operator
            new, state, error = self._killed(child, rc, state, stop)
        elif new == JobStatus.REQUESTED and not child.terminated and child.job.attempts >= self.max_attempts:
            new, state, error = self._give_up(child, state, RunErrorCode.PREEMPTED_TOO_OFTEN,
                                              "the run was preempted (it checkpointed and stopped on SIGTERM)")
        elif rc != ExitCode.CANCELLED and new in (JobStatus.REQUESTED, JobStatus.CANCELLED):
            # preempted (or killed by our shutdown before it could install its handler, or after the
            # grace period): the next run resumes from the last checkpoint. A stop requested before
            # the preemption still ends the job.
            if stop:
                child.folder.clear_stop()
            if rc != ExitCode.PREEMPTED:
                append_line(child.folder.log_path, f"{utcnow()} WARN  worker {self.worker_id} stopped the run "
                            f"(signal {-rc}) before it checkpointed; {new.value}")
                if file_status == JobStatus.RUNNING.value:
                    state = child.folder.update_state(status=new)
            if new == JobStatus.REQUESTED:
                _restarted(child, "worker_shutdown" if child.terminated else "preempted", exit_code=rc)
        elif new == JobStatus.FAILED and not (error and rc in (ExitCode.FAILED, ExitCode.SPEC_INVALID,
                                                                ExitCode.DATASET_INVALID)):
            what = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            if rc == ExitCode.COMPLETE:
                what += f" but status.json says {file_status!r}"
            message = f"the run ended with {what}; {RUNNER_LOG} in the job folder has its output"
            append_line(child.folder.log_path, f"{utcnow()} ERROR worker {self.worker_id}: {message}")
            for line in tail(child.folder.root / RUNNER_LOG, 20):
                append_line(child.folder.log_path, f"{utcnow()} ERROR   | {line}")
            error = error or {"code": RunErrorCode.RUN_CRASHED.value, "type": "RunnerExited", "message": message,
                              "where": "worker", "errors": []}
            if file_status not in (None, JobStatus.FAILED.value):
                state = child.folder.update_state(status=JobStatus.FAILED, finished_at=utcnow(), error=error)
        ok = self.store.finish_job(
            job_id=child.job.id, worker_id=self.worker_id, status=new,
            error=error if new == JobStatus.FAILED else None,
            metrics=state.metrics if new == JobStatus.COMPLETE and state is not None else None,
            progress=_progress(state), started_at=parse_time(state.started_at if state else None),
            finished_at=parse_time(state.finished_at if state else None))
        if new == JobStatus.CANCELLED and file_status != JobStatus.CANCELLED.value and state is not None:
            child.folder.update_state(status=JobStatus.CANCELLED, finished_at=state.finished_at or utcnow())
        log.info("job %s: run exited %s → %s%s", child.job.id, rc, new.value,
                 "" if ok else " (no longer ours: not recorded)")

    def _killed(self, child: _Child, rc: int, state, stop: bool):  # noqa: ANN001 - a JobState or None
        """A run killed by a signal: requeued to resume while attempts are left, else failed with its code.

        Returns (the new status, status.json's state, the error to record).
        """
        sig = -rc
        oom_now = oom_kills(self.memory_events_path)
        oom = (sig == signal.SIGKILL and child.oom_kills_at_start is not None and oom_now is not None
               and oom_now > child.oom_kills_at_start)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        what = ("the kernel's OOM killer killed the run (it ran out of memory)" if oom
                else f"the run was killed by {name}")
        if stop:  # the user asked it to stop: it has
            child.folder.clear_stop()
            self._log(child.folder, "WARN", f"worker {self.worker_id}: {what} after a stop was requested; cancelled")
            return JobStatus.CANCELLED, state, None
        code = RunErrorCode.OUT_OF_MEMORY if oom else RunErrorCode.KILLED
        if child.job.attempts >= self.max_attempts:
            return self._give_up(child, state, code, what, signal=sig)
        latest = list_checkpoints(child.folder)
        resume = (f"resumes from checkpoint {latest[-1].uuid} (step {latest[-1].step})" if latest
                  else "starts over (no checkpoint yet)")
        self._log(child.folder, "WARN", f"worker {self.worker_id}: {what} ({code.value}) at step {_step(state)}, "
                  f"attempt {child.job.attempts} of {self.max_attempts}; requeued: the next run {resume}")
        if state is not None:
            state = child.folder.update_state(status=JobStatus.REQUESTED)
        _restarted(child, code.value, signal=name, checkpoint=latest[-1].uuid if latest else None)
        return JobStatus.REQUESTED, state, None

    def _give_up(self, child: _Child, state, code: RunErrorCode, what: str, **extra):  # noqa: ANN001
        """The job's last attempt ended without finishing: failed, with `code` (status.json and store alike)."""
        n = child.job.attempts
        hint = {RunErrorCode.OUT_OF_MEMORY: "give it more memory (a worker with more, a smaller batch size or "
                                            "max_length, gradient checkpointing), then submit it again",
                RunErrorCode.KILLED: "find what killed it (the machine's logs), then submit it again",
                }.get(code, "check why its workers stop (preemptions, restarts), then submit it again")
        message = (f"{what} at step {_step(state)}; giving up after {n} attempt(s) (--max-attempts "
                   f"{self.max_attempts}): {hint}. Its checkpoints and logs are kept")
        self._log(child.folder, "ERROR", f"worker {self.worker_id}: {message} ({code.value})")
        error = {"code": code.value, "type": "RunAborted", "message": message, "where": "worker", "errors": [],
                 "attempts": n, **extra}
        if state is not None:
            state = child.folder.update_state(status=JobStatus.FAILED, finished_at=utcnow(), error=error)
        return JobStatus.FAILED, state, error


def _restarted(child: _Child, reason: str, **data) -> None:
    """A `restarted` event: the job is requeued after a kill or preemption (`reason`), its next run resumes."""
    if child.folder.root.is_dir():
        append_event(child.folder.root, EventType.RESTARTED, {"attempt": child.job.attempts, "reason": reason, **data},
                     level=EventLevel.WARNING)


def _step(state) -> int | None:  # noqa: ANN001 - a JobState or None
    return state.progress.step if state is not None and state.progress is not None else None


def _progress(state) -> dict | None:  # noqa: ANN001 - a JobState or None
    """status.json's `progress` as the store keeps it (a plain dict)."""
    if state is None or state.progress is None:
        return None
    return state.progress.model_dump(mode="json")
