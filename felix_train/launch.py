"""Distributed launch: one job on many processes through `accelerate launch`, and what each rank needs.

- Rank and world detection (`distributed_rank`, `under_launcher`) from the launcher's environment.
- The bundled accelerate configs, shipped as package data (`felix_train/configs/accelerate/*.yaml`):
  `accelerate_config("ddp")` resolves a name or a path for `engine.distributed.config` (checked at validation
  by `felix_train.spec.find_accelerate_config`: a YAML mapping with `distributed_type`).
- The job's lock (`JobLock`): the launching process holds it for the whole run and names itself to its ranks
  (`LOCK_HOLDER_ENV`), so rank 0 of its own launch is not refused (`lock_held_by_launcher`).
- `launch_command` / `launch_distributed`: a spec with `engine.distributed.num_processes` above 1, run as one
  process (`python -m felix_train SPEC`, the worker, `run_job`), starts `accelerate launch` for itself,
  forwards SIGTERM/SIGINT to the ranks and returns rank 0's exit code, which rank 0 writes to the exit file
  (`write_exit_code`; a launcher's own exit code is 1 whatever its ranks returned, which would hide 4 and 75).
- Inside a rank: `init_distributed` joins the process group before training, `main_first` lets rank 0 run a
  block first, `leave_distributed` leaves the group; `die_with_parent` ties a rank's life to its launcher.

The job lifecycle itself is `felix_train.runner`'s. Imports nothing heavy at module import.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from felix_train.jobs import (
    ErrorCode, ExitCode, JobError, JobFolder, JobStatus, atomic_write_json, felix_home, read_json, status_after_exit, utcnow,
)
from felix_train.spec_files import ACCELERATE_CONFIG_DIR, find_accelerate_config  # noqa: F401 - re-exported

EXIT_FILE_ENV = "FELIX_EXIT_FILE"
"""Set by `launch_distributed`: where rank 0 writes its exit code (`{"exit_code": N}`) for the launching process."""

LOCK_HOLDER_ENV = "FELIX_JOB_LOCK"
"""Set by `launch_distributed` for its ranks: `<job_id>:<pid>` of the launching process, which holds the job's lock
(`felix_train.jobs.JobLock`) for the whole run, so its rank 0 does not take it again (`lock_held_by_launcher`)."""

ACCELERATE_CONFIG_ENV = "FELIX_ACCELERATE_CONFIG"
"""The accelerate config for distributed specs that name none (`engine.distributed.config` wins)."""

MACHINE_ENV = {"FELIX_NUM_MACHINES": "--num_machines", "FELIX_MACHINE_RANK": "--machine_rank",
               "FELIX_MAIN_PROCESS_IP": "--main_process_ip", "FELIX_MAIN_PROCESS_PORT": "--main_process_port"}
"""Several machines: each runs `python -m felix_train SPEC` with these set (scripts/slurm/felix.sbatch does), and
its launcher gets the matching `accelerate launch` flags; `num_processes` counts the processes of all machines."""

DIST_TIMEOUT_S = 1800
"""Collective timeout (HF's `ddp_timeout` default): how long a rank waits at a barrier, e.g. for rank 0's save."""

_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (accelerate/torchrun set RANK, WORLD_SIZE; mpirun its own)."""
    return _env_int(_RANK_VARS, 0), _env_int(_WORLD_VARS, 1)


def under_launcher() -> bool:
    """Whether this process is a rank started by a launcher (accelerate, torchrun, mpirun)."""
    return "LOCAL_RANK" in os.environ or any(os.environ.get(v) for v in _RANK_VARS[1:]) or distributed_rank()[1] > 1


def launched_rank() -> bool:
    """Whether this process is a rank of a `launch_distributed` run (it then reports to the exit file)."""
    return bool(os.environ.get(EXIT_FILE_ENV)) and under_launcher()


def lock_held_by_launcher(job_id: str) -> bool:
    """Whether this process is a rank of a `launch_distributed` run of `job_id` whose launching process (an
    ancestor of this one, named by `LOCK_HOLDER_ENV`) holds the job's lock. A stray variable naming another job,
    or a process that is not an ancestor, does not count."""
    held_id, _, pid = os.environ.get(LOCK_HOLDER_ENV, "").rpartition(":")
    if held_id != job_id or not pid.isdigit():
        return False
    import psutil

    try:
        return int(pid) in {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        return False


def write_exit_code(code: int) -> None:
    """Rank 0 of a `launch_distributed` run: its exit code for the launching process (`EXIT_FILE_ENV`)."""
    exit_file = os.environ.get(EXIT_FILE_ENV)
    if exit_file and distributed_rank()[0] == 0 and under_launcher():
        atomic_write_json(exit_file, {"exit_code": int(code), "finished_at": utcnow()})


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- inside a rank --------------------------------------------------------------------------------------------

def init_distributed(device: str) -> None:
    """Join the launcher's process group (gloo on CPU, NCCL on GPUs, DeepSpeed's under a DeepSpeed config).

    The trainer would join it anyway (HF `TrainingArguments` through accelerate's `PartialState`, which reuses
    a group already initialised); joining first lets the runner order rank 0's writes before the others' reads.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from datetime import timedelta

    from accelerate import PartialState

    PartialState(cpu=device == "cpu", timeout=timedelta(seconds=DIST_TIMEOUT_S))


def leave_distributed() -> None:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def main_first():
    """Rank 0 runs the block first, the other ranks once it is done (accelerate's `main_process_first`)."""
    from felix_train.trainers.context import barrier, distributed

    dist = distributed()
    main = dist is None or dist.get_rank() == 0
    if not main:
        barrier()
    yield
    if main:
        barrier()  # not reached when rank 0 failed: it records the failure, the launcher ends the others


# -- the launching process -----------------------------------------------------------------------------------

def accelerate_config(config: str | None) -> Path | None:
    """The accelerate config file for `engine.distributed.config` (default `$FELIX_ACCELERATE_CONFIG`), checked
    by `felix_train.spec.find_accelerate_config` (a path, or a bundled name; a YAML mapping with
    `distributed_type`).

    Raises:
        SpecError: no such file, or not an accelerate config.
    """
    config = config or os.environ.get(ACCELERATE_CONFIG_ENV) or None
    if config is None:
        return None
    return find_accelerate_config(config)[0]


def launch_command(spec_path: Path, *, job_id: str, home: Path, num_processes: int,
                   config: Path | None) -> list[str]:
    """`accelerate launch ... -m felix_train run SPEC --job-id ID --home HOME` for one job.

    Without a config file the launch is accelerate's multi-process one (`--multi_gpu`: `torch.distributed.run`
    underneath), which is also the one that starts several processes on a machine without GPUs (gloo);
    accelerate's `--cpu` starts a single process unless mpirun is set up.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if config is not None:
        cmd += ["--config_file", str(config)]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if not os.environ.get("FELIX_NUM_MACHINES"):
            cmd += ["--num_machines", "1"]
    for var, flag in MACHINE_ENV.items():
        if os.environ.get(var):
            cmd += [flag, os.environ[var]]
    return [*cmd, "-m", "felix_train", "run", str(spec_path), "--job-id", job_id, "--home", str(home)]


def die_with_parent(parent: int | None = None) -> None:
    """SIGKILL this process when its parent (pid `parent`, default the current one) dies (Linux
    `PR_SET_PDEATHSIG`; elsewhere nothing happens).

    Set in the launcher (before exec) and in each rank of a `launch_distributed` run: the launching process
    is killed (SIGKILL, e.g. by a worker fencing a job it lost) → its launcher → its ranks, so no rank outlives
    it and writes to a job folder another run may own. A SIGTERM to the launching process stays graceful.
    """
    parent = os.getppid() if parent is None else parent
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent was gone before the call
        os.kill(os.getpid(), signal.SIGKILL)


def _ranks_of(launcher_pid: int) -> list:
    """The launcher's rank processes (descendants with LOCAL_RANK in their environment, not their children)."""
    import psutil

    try:
        procs = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.Error:
        return []
    ranks = {}
    for proc in procs:
        try:
            if "LOCAL_RANK" in proc.environ():
                ranks[proc.pid] = proc
        except psutil.Error:
            continue
    out = []
    for proc in ranks.values():
        try:
            if proc.ppid() not in ranks:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _forward_signal(launcher: subprocess.Popen, signum: int) -> str:
    """Send `signum` to every rank (not to the launcher, which would SIGKILL them 30 s later); to the launcher
    itself while no rank has started yet. Returns what was signalled, for the log."""
    import psutil

    ranks = _ranks_of(launcher.pid)
    for proc in ranks:
        try:
            proc.send_signal(signum)
        except psutil.Error:
            pass
    if ranks:
        return f"{len(ranks)} rank(s) (pids {', '.join(str(p.pid) for p in ranks)})"
    try:
        launcher.send_signal(signum)
    except ProcessLookupError:
        pass
    return f"the launcher (pid {launcher.pid}; no rank had started)"


def launch_distributed(data: dict, *, job_id: str, home, num_processes: int, config: Path | None,
                       echo: bool = True) -> int:
    """Run a job on `num_processes` ranks with `accelerate launch`, supervising it; returns rank 0's exit code.

    The spec goes to `work/launch-spec.json`; the launcher runs in its own session, so a signal meant for
    this process (a terminal's Ctrl-C, the worker's or Kubernetes' SIGTERM) reaches the ranks only through
    it: SIGTERM/SIGINT are forwarded to every rank, which stop together at the next step, checkpoint and
    exit 75. Rank 0 writes its exit code to `work/launch-exit.json`; when no rank got that far (killed,
    crashed), the code is 75 after a forwarded signal and 1 otherwise, and a `running` status is set right.
    On several machines (`FELIX_MACHINE_RANK` set, `$FELIX_HOME` shared) each machine's launching process
    returns rank 0's code, read from the shared job folder; only machine 0's writes to the job folder.
    """
    home = felix_home(home).resolve()
    job = JobFolder(job_id, home)
    machine_rank = int(os.environ.get("FELIX_MACHINE_RANK") or 0)
    job.work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = job.work_dir / "launch-spec.json"
    exit_path = job.work_dir / "launch-exit.json"
    if machine_rank == 0:
        atomic_write_json(spec_path, data)
        exit_path.unlink(missing_ok=True)
    else:
        spec_path = job.work_dir / f"launch-spec.{machine_rank}.json"
        atomic_write_json(spec_path, data)
    cmd = launch_command(spec_path, job_id=job_id, home=home, num_processes=num_processes, config=config)
    env = dict(os.environ, **{EXIT_FILE_ENV: str(exit_path), "PYTHONUNBUFFERED": "1",
                              LOCK_HOLDER_ENV: f"{job_id}:{os.getpid()}"})
    package_root = str(Path(__file__).resolve().parents[1])  # `-m felix_train` imports this very package
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    if echo:
        say(f"[felix] job {job_id}: launching {num_processes} processes: {' '.join(cmd)}")

    received: list[int] = []
    launcher = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=functools.partial(die_with_parent, os.getpid()))

    def forward(signum, frame) -> None:
        received.append(signum)
        what = _forward_signal(launcher, signum)
        if echo:
            say(f"[felix] job {job_id}: signal {signum} forwarded to {what}")

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = launcher.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = read_json(exit_path) or {}
    if machine_rank != 0:  # rank 0 runs elsewhere: its code reaches the shared folder shortly
        deadline = time.monotonic() + 60
        while not result and time.monotonic() < deadline:
            time.sleep(1)
            result = read_json(exit_path) or {}
    if isinstance(result.get("exit_code"), int):
        code = result["exit_code"]
        if echo and code in (ExitCode.CANCELLED, ExitCode.PREEMPTED) and rc != 0:
            say(f"[felix] job {job_id}: the ranks exited {code} ({ExitCode(code).name.lower()}); the launcher "
                 f"reports any non-zero exit as a failure (its ChildFailedError above), which it is not")
        return code
    # no rank 0 outcome: the launch failed, a rank crashed, or the ranks were killed before they could checkpoint
    code = ExitCode.PREEMPTED if received else ExitCode.FAILED
    if machine_rank != 0:
        return int(code)
    from felix_train.reporting import Reporter

    reporter = Reporter(job, echo=echo)
    status = reporter.status()
    message = (f"the distributed run ended (launcher exit code {rc}) without an outcome from rank 0"
               + (" after a forwarded signal; the job resumes from its last checkpoint when rerun" if received
                  else "; the launcher's output says why"))
    if job.root.is_dir():
        reporter.log(message, level="WARN" if received else "ERROR")
    if status.get("status") in (JobStatus.RUNNING.value, JobStatus.REQUESTED.value):
        after = status_after_exit(code, file_status=status.get("status"))  # requested (resumable) or failed
        if after == JobStatus.FAILED:
            reporter.update_status(status=after, finished_at=utcnow(),
                                   error=JobError(type="LaunchFailed", message=message, code=ErrorCode.LAUNCH_FAILED.value,
                                                  where="launcher", errors=[]))
        else:
            reporter.update_status(status=after)
    return int(code)
