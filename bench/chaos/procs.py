"""The processes the chaos bench starts and the ones it looks for: workers, hand-started runs, /proc.

`Fleet` keeps two worker slots filled (a killed or drained worker is replaced, as an orchestrator
would), starts the duplicate runs, finds each worker's training children in /proc, and in
`close()` ends every process it started: the workers (SIGTERM, then SIGKILL), the duplicate runs,
and any process left whose command line names the bench's own `$FELIX_HOME` (a unique temp folder,
so nothing of anyone else's is touched).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(home: Path) -> dict[str, str]:
    """The environment of every process the bench starts: its home, one quiet OpenMP thread, this checkout."""
    env = dict(os.environ)
    env.pop("FELIX_DATABASE_URL", None)  # the workers get --database-url
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env.update(FELIX_HOME=str(home), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *paths]))
    return env


def proc_table() -> dict[int, tuple[int, list[str]]]:
    """`{pid: (ppid, argv)}` of every process visible in /proc (those that vanish meanwhile are left out)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(name)] = (ppid, argv)
    return out


def runner_job_id(argv: list[str]) -> str | None:
    """The job id of a `python -m felix_train run SPEC --job-id ID ...` command line, else None."""
    if "felix_train" not in argv or "run" not in argv or "--job-id" not in argv:
        return None
    i = argv.index("--job-id")
    return argv[i + 1] if i + 1 < len(argv) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _descends(pid: int, ancestors: set[int], table: dict[int, tuple[int, list[str]]]) -> bool:
    for _ in range(64):  # bounded walk up the tree
        pid = table.get(pid, (0, []))[0]
        if pid in ancestors:
            return True
        if pid <= 1:
            return False
    return False


@dataclass
class WorkerSlot:
    slot: int
    gen: int
    worker_id: str
    proc: subprocess.Popen
    log: Path
    draining_since: float | None = None
    planned_exit: bool = False


@dataclass
class Fleet:
    home: Path
    db_url: str
    logs: Path
    workers: int = 2
    max_attempts: int = 5
    heartbeat_timeout_s: float = 10.0
    slots: dict[int, WorkerSlot] = field(default_factory=dict)
    dup_runs: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    started: list[subprocess.Popen] = field(default_factory=list)
    restarts: int = 0
    unexpected_exits: list[dict] = field(default_factory=list)
    drain_timeouts: int = 0

    # -- workers --------------------------------------------------------------------------------
    def start(self) -> None:
        for slot in range(self.workers):
            self._start_worker(slot, 0)

    def _start_worker(self, slot: int, gen: int) -> WorkerSlot:
        worker_id = f"chaos-w{slot}-g{gen}"
        log = self.logs / f"{worker_id}.log"
        cmd = [sys.executable, "-m", "felix_train.service.worker", "--home", str(self.home), "--database-url",
               self.db_url, "--concurrency", "1", "--poll", "0.5", "--worker-id", worker_id, "--max-deployments", "0",
               "--heartbeat-timeout", str(self.heartbeat_timeout_s), "--max-attempts", str(self.max_attempts),
               "--stop-grace", "60"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=child_env(self.home), cwd=str(ROOT), start_new_session=True)
        self.started.append(proc)
        ws = WorkerSlot(slot=slot, gen=gen, worker_id=worker_id, proc=proc, log=log)
        self.slots[slot] = ws
        return ws

    def replace(self, ws: WorkerSlot) -> WorkerSlot:
        self.restarts += 1
        return self._start_worker(ws.slot, ws.gen + 1)

    def kill_worker(self, ws: WorkerSlot) -> None:
        """kill -9, then a new worker in the slot at once."""
        ws.planned_exit = True
        os.kill(ws.proc.pid, signal.SIGKILL)
        ws.proc.wait(timeout=30)
        self.replace(ws)

    def term_worker(self, ws: WorkerSlot) -> None:
        """SIGTERM; `tend` replaces it once it has drained (or kills it after 90 s)."""
        ws.planned_exit = True
        ws.draining_since = time.monotonic()
        os.kill(ws.proc.pid, signal.SIGTERM)

    def tend(self) -> None:
        """Replace workers that exited (drained after SIGTERM, or died on their own: counted)."""
        for ws in list(self.slots.values()):
            rc = ws.proc.poll()
            if rc is None:
                if ws.draining_since is not None and time.monotonic() - ws.draining_since > 90:
                    self.drain_timeouts += 1
                    os.kill(ws.proc.pid, signal.SIGKILL)
                    ws.proc.wait(timeout=30)
                    self.replace(ws)
                continue
            if not ws.planned_exit:
                self.unexpected_exits.append({"worker": ws.worker_id, "rc": rc})
            self.replace(ws)

    def live_workers(self) -> dict[int, WorkerSlot]:
        """`{pid: slot}` of the workers that run and are not draining (fault targets)."""
        return {ws.proc.pid: ws for ws in self.slots.values() if ws.proc.poll() is None and ws.draining_since is None}

    def runs(self, table: dict[int, tuple[int, list[str]]]) -> dict[str, tuple[int, WorkerSlot]]:
        """`{job_id: (runner pid, its worker)}` for the training children of the live, non-draining workers."""
        live = self.live_workers()
        out = {}
        for pid, (ppid, argv) in table.items():
            if ppid in live and (job_id := runner_job_id(argv)) is not None and alive(pid):
                out[job_id] = (pid, live[ppid])
        return out

    # -- duplicate runs -------------------------------------------------------------------------
    def start_dup_run(self, job_id: str, spec_path: Path) -> subprocess.Popen:
        log = self.logs / f"dup-run-{job_id}-{len(self.dup_runs)}.log"
        cmd = [sys.executable, "-m", "felix_train", str(spec_path), "--job-id", job_id, "--home", str(self.home)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=child_env(self.home), cwd=str(ROOT), start_new_session=True)
        self.started.append(proc)
        self.dup_runs.append((job_id, proc, log))
        return proc

    def dup_runs_alive(self) -> int:
        return sum(p.poll() is None for _, p, _ in self.dup_runs)

    # -- the end --------------------------------------------------------------------------------
    def strays(self) -> list[dict]:
        """Processes naming this home that are neither a worker, a worker's training child, nor a duplicate run."""
        table = proc_table()
        ours = {ws.proc.pid for ws in self.slots.values()} | {p.pid for _, p, _ in self.dup_runs} | {os.getpid()}
        out = []
        for pid, (ppid, argv) in table.items():
            if pid in ours or _descends(pid, ours, table) or not alive(pid):
                continue
            if any(str(self.home) in a for a in argv):
                out.append({"pid": pid, "ppid": ppid, "cmd": " ".join(argv)[:200]})
        return out

    def close(self, grace_s: float = 20.0) -> list[int]:
        """End every process this fleet started, and any left naming its home. Returns the pids killed last."""
        for ws in self.slots.values():
            if ws.proc.poll() is None:
                ws.planned_exit = True
                try:
                    os.kill(ws.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for proc in self.started:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait(timeout=30)
        killed = []
        for _ in range(3):  # runs re-parented after their worker died; their helpers
            left = [pid for pid, (_, argv) in proc_table().items()
                    if pid != os.getpid() and alive(pid) and any(str(self.home) in a for a in argv)]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        return killed
