"""What the worker's two supervisors share: its settings, the child processes' environment and plumbing.

`WorkerBase` holds the settings (`Worker`'s arguments) and what both supervisors need: the
child environment (`FELIX_HOME`, `FELIX_JOB_ID`, this package on `PYTHONPATH`), a line in a job's
train.log, and the process helpers below (parent-death signal, signalling a process group,
the tail of a log, status.json read as a `JobState`, the cgroup's OOM-kill counter).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import felix_train
from felix_train.jobs import JobFolder, JobState, append_line, felix_home, utcnow
from felix_train.service.store import Store


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_runner_cmd() -> list[str]:
    return [sys.executable, "-m", "felix_train", "run"]


def default_serving_cmd() -> list[str]:
    return [sys.executable, "-m", "felix_train.service.serving"]


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def set_parent_death_signal() -> None:
    """In the child, before exec: get SIGTERM when the worker dies (Linux), so a run never outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the heartbeat fencing still protects the job
        pass


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's process group (it leads its own session: accelerate's ranks too), else the child."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


CGROUP_ROOT = Path("/sys/fs/cgroup")


def default_memory_events_path() -> Path | None:
    """The file with this process' cgroup's `oom_kill` counter (its children's too); None when there is none.

    cgroup v2: `memory.events` of the cgroup `/proc/self/cgroup` names (`0::/PATH`; in a container
    with its own cgroup namespace that is `/`, i.e. `/sys/fs/cgroup/memory.events`). cgroup v1:
    `memory.oom_control` of the memory controller's cgroup, which has the same `oom_kill` line.
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":
            candidates.append(CGROUP_ROOT / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            candidates.append(CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control")
    candidates += [CGROUP_ROOT / "memory.events", CGROUP_ROOT / "memory" / "memory.oom_control"]
    for candidate in candidates:
        if candidate.is_file() and oom_kills(candidate) is not None:
            return candidate
    return None


def oom_kills(path: Path | None) -> int | None:
    """The `oom_kill` counter of a `memory.events` (or v1 `memory.oom_control`) file: processes the OOM
    killer ended in that cgroup (None: unknown)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def read_state(folder: JobFolder) -> JobState | None:
    """The job's status.json as a `JobState`; None when there is none (or a foreign writer left it unreadable)."""
    try:
        return folder.read_state()
    except ValueError:  # never half-written (atomic), but be safe against foreign writers
        return None


def tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 8192, 0))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []
    return lines[-n:]


class WorkerBase:
    """The worker's settings and the plumbing its run and deployment supervisors share (see `Worker`)."""

    def __init__(self, store: Store, *, home: str | os.PathLike | None = None, worker_id: str | None = None,
                 concurrency: int = 1, poll_s: float = 1.0, heartbeat_timeout_s: float = 60.0,
                 max_attempts: int = 3, runner_cmd: list[str] | None = None, stop_grace_s: float = 600.0,
                 accelerate_config: str | None = None, max_deployments: int = 4,
                 serving_cmd: list[str] | None = None, deploy_timeout_s: float = 600.0,
                 memory_events_path: str | os.PathLike | None = None):
        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
        if max_deployments < 0:
            raise ValueError(f"--max-deployments must be 0 or more, got {max_deployments}")
        if max_attempts < 1:
            raise ValueError(f"--max-attempts must be at least 1, got {max_attempts}")
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
        self.memory_events_path = Path(memory_events_path) if memory_events_path else default_memory_events_path()
        self.children: dict = {}
        self.serving: dict = {}
        self._shutdown = threading.Event()
        self._shutdown_at: float | None = None
        self._last_requeue = 0.0
        self._last_heartbeat = 0.0
        self._last_serving_heartbeat = 0.0
        # heartbeats (and looks for stale jobs) four times per timeout, at most once per poll
        self.heartbeat_interval_s = max(poll_s, heartbeat_timeout_s / 4)


    def _child_env(self, job_id: str) -> dict[str, str]:
        env = dict(os.environ)
        env["FELIX_HOME"] = str(self.home)
        env["FELIX_JOB_ID"] = job_id
        env["FELIX_WORKER_ID"] = self.worker_id
        env["PYTHONUNBUFFERED"] = "1"
        env["FELIX_CONCURRENT_JOBS"] = str(self.concurrency)  # perf.threads: the jobs run at once share the CPUs
        if self.accelerate_config:
            env["FELIX_ACCELERATE_CONFIG"] = self.accelerate_config
        # `-m felix_train` must import this very package, installed or not
        package_root = str(Path(felix_train.__file__).resolve().parents[1])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if package_root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
        return env

    def _log(self, folder: JobFolder, level: str, message: str) -> None:
        """A line in the job's train.log (never recreating the folder of a deleted job)."""
        if folder.root.is_dir():
            append_line(folder.log_path, f"{utcnow()} {level:<5} {message}")
