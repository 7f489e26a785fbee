"""One job's lifecycle: validate → resolve → run the trainer → status, exit code.

`run_job(spec)` is what `python -m felix_train SPEC`, `accelerate launch -m felix_train
SPEC` and orchestrator workers call. It catches errors once, at its edge: a failed
job gets `failed`, its error in status.json and its traceback in train.log, and keeps
its logs and checkpoints. Exit codes (DESIGN.md): 0 complete, 1 failed, 2 spec
invalid, 3 dataset invalid, 4 cancelled by a stop request, 75 preempted (resumable).

Distributed runs (DDP, FSDP, DeepSpeed through `accelerate launch`): every rank runs `run_job`;
rank 0 alone writes the job folder (status, logs, metrics, manifests, the final model). The runner
joins the launcher's process group before training so that rank 0's setup (a fresh status, a stale
STOP file cleared) happens before any other rank looks, and the ranks leave together once rank 0
has written the outcome. A spec with `engine.distributed.num_processes` above 1 run as one process
(`python -m felix_train SPEC`, the worker, `run_job`) launches itself: `launch_distributed` starts
`accelerate launch` for it, forwards SIGTERM/SIGINT to the ranks, and returns rank 0's exit code
(a launcher's own exit code is 1 whatever its ranks returned, which would hide 4 and 75).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from felix_train.catalog import Algorithm, ModelFamily, is_checkpoint_uuid
from felix_train.checkpoints import CheckpointManager, find_checkpoint
from felix_train.errors import DatasetError, FelixError, SpecError
from felix_train.jobs import ExitCode, JobFolder, JobStatus, atomic_write_json, felix_home, read_json, utcnow
from felix_train.reporting import Reporter
from felix_train.spec import JobSpec, ReportTo, load_spec_file, spec_from_json, validate_spec


# Which metric picks the best checkpoint, per (family, algorithm): (name, greater_is_better).
BEST_METRIC: dict[tuple[ModelFamily, Algorithm], tuple[str, bool]] = {
    (ModelFamily.GLINER2, Algorithm.SFT): ("eval_f1", True),
    (ModelFamily.CAUSAL_LM, Algorithm.SFT): ("eval_loss", False),
    (ModelFamily.CAUSAL_LM, Algorithm.DPO): ("eval_rewards/accuracies", True),
    (ModelFamily.CAUSAL_LM, Algorithm.GRPO): ("reward", True),
}

DATASET_ERROR_TYPES = {"dataset_not_found", "dataset_not_ready", "dataset_format_mismatch"}


EXIT_FILE_ENV = "FELIX_EXIT_FILE"
"""Set by `launch_distributed`: where rank 0 writes its exit code (`{"exit_code": N}`) for the launching process."""

ACCELERATE_CONFIG_ENV = "FELIX_ACCELERATE_CONFIG"
"""The accelerate config for distributed specs that name none (`engine.distributed.config` wins)."""

MACHINE_ENV = {"FELIX_NUM_MACHINES": "--num_machines", "FELIX_MACHINE_RANK": "--machine_rank",
               "FELIX_MAIN_PROCESS_IP": "--main_process_ip", "FELIX_MAIN_PROCESS_PORT": "--main_process_port"}
"""Several machines: each runs `python -m felix_train SPEC` with these set (scripts/slurm/felix.sbatch does), and
its launcher gets the matching `accelerate launch` flags; `num_processes` counts the processes of all machines."""

ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
"""Bundled accelerate configs: `engine.distributed.config: ddp` names `configs/accelerate/ddp.yaml`."""

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


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _spec_exit_code(err: SpecError) -> ExitCode:
    if err.errors and all(e.type in DATASET_ERROR_TYPES for e in err.errors):
        return ExitCode.DATASET_INVALID
    return ExitCode.SPEC_INVALID


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    frame = tb[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"


def _fail_early(job: JobFolder, reporter: Reporter, err: BaseException, message: str) -> None:
    """Record a failure before training started (spec or dataset invalid on a named job)."""
    job.create()
    reporter.log(message, level="ERROR")
    status = reporter.status() or {"id": job.id, "created_at": utcnow()}
    status.update(id=job.id, status=JobStatus.FAILED.value, finished_at=utcnow(),
                  error={"type": type(err).__name__, "message": message, "where": _where(err),
                         "errors": err.to_list() if hasattr(err, "to_list") else []})
    if reporter.is_main:
        job.write_status(status)


def run_job(spec: str | os.PathLike | dict | JobSpec, *, job_id: str | None = None,
            home: str | os.PathLike | None = None, echo: bool = True) -> int:
    """Run one job to its end; returns the exit code (see `ExitCode`).

    A spec with `engine.distributed.num_processes` above 1, called outside a launcher, is launched
    with `accelerate launch` (`launch_distributed`); under a launcher, this process is one rank.
    """
    rank, world = distributed_rank()
    if os.environ.get(EXIT_FILE_ENV) and under_launcher():
        _die_with_parent()  # a rank of `launch_distributed`: never outlive the launcher
    code = _run_job(spec, job_id=job_id, home=home, echo=echo, rank=rank, world=world)
    exit_file = os.environ.get(EXIT_FILE_ENV)
    if exit_file and rank == 0 and under_launcher():
        atomic_write_json(exit_file, {"exit_code": int(code), "finished_at": utcnow()})
    return code


def _run_job(spec, *, job_id, home, echo, rank: int, world: int) -> int:
    is_main = rank == 0

    # 1. load and validate
    try:
        data = spec if isinstance(spec, (dict, JobSpec)) else load_spec_file(spec)
        if isinstance(data, JobSpec):
            data = data.to_json()
        data = {k: v for k, v in data.items() if k != "catalog_model"}
        engine = data.get("engine") if isinstance(data.get("engine"), dict) else {}
        home = home if home is not None else engine.get("home")
        job_id = job_id or engine.get("job_id")
        resolved = validate_spec(data, home=home)
        launch = resolved.engine.distributed.num_processes > 1 and not under_launcher()
        config = accelerate_config(resolved.engine.distributed.config) if launch else None
    except SpecError as err:
        if is_main:
            _say(str(err))
        code = _spec_exit_code(err)
        if job_id:  # a queued job: the worker and API must see why it failed
            job = JobFolder(job_id, home)
            _fail_early(job, Reporter(job, is_main=is_main, echo=False), err, str(err))
        return int(code)

    job_id = job_id or resolved.engine.job_id or f"job-{uuid.uuid4().hex[:12]}"
    if launch:
        return launch_distributed(data, job_id=job_id, home=home, num_processes=resolved.engine.distributed.num_processes,
                                  config=config, echo=echo)
    job = JobFolder(job_id, home)
    reporter = Reporter(job, is_main=is_main, echo=echo and is_main,
                        tensorboard=ReportTo.TENSORBOARD in resolved.engine.report_to)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = _run(resolved, job, reporter, home, is_main, world)
        if code in (ExitCode.COMPLETE, ExitCode.CANCELLED, ExitCode.PREEMPTED):
            _leave_distributed()  # every rank is here (a failed rank leaves without: the launcher ends the others)
        return int(code)
    finally:
        reporter.close()
        for sig, handler in previous.items():  # an embedding worker gets its own handlers back
            signal.signal(sig, handler)


def _reopen(job: JobFolder, resolved: JobSpec, reporter: Reporter) -> JobSpec:
    """A rerun of an existing job keeps its stored name; a different spec is refused."""
    stored = job.read_spec()
    if stored is None:
        return resolved
    new = resolved.to_json()
    ignore = {"name"}
    diff = sorted(k for k in set(stored) | set(new) if k not in ignore and stored.get(k) != new.get(k))
    engine_diff = [k for k in ("engine",) if k in diff]
    if engine_diff:
        # only the output locations and the launch (process count, accelerate config) may differ between
        # two launches of the same job: a DDP job resumes on another number of processes
        a = {k: v for k, v in stored["engine"].items() if k not in _RELAUNCH_KEYS}
        b = {k: v for k, v in new["engine"].items() if k not in _RELAUNCH_KEYS}
        if a == b:
            diff.remove("engine")
    if diff:
        raise SpecError([_item((k,), f"job {job.id} already exists with a different `{k}`; rerun it with its "
                               "original spec to resume, or use a new job id", "job_spec_mismatch") for k in diff])
    if isinstance(stored.get("engine"), dict) and "distributed" in new.get("engine", {}):
        stored = {**stored, "engine": {**stored["engine"], "distributed": new["engine"]["distributed"]}}
    return spec_from_json(stored)


_RELAUNCH_KEYS = ("job_id", "home", "distributed")


def _item(loc, msg, typ):
    from felix_train.errors import ErrorItem

    return ErrorItem(loc, msg, typ)


def _run(resolved: JobSpec, job: JobFolder, reporter: Reporter, home, is_main: bool, world: int) -> ExitCode:
    from felix_train.data.registry import DatasetRegistry
    from felix_train.models import resolve_model
    from felix_train.trainers import get_trainer
    from felix_train.trainers.context import (
        Outcome, ResolvedDataset, ResolvedModel, RunControl, TrainContext, barrier,
    )

    entry = resolved.entry()
    try:
        resolved = _reopen(job, resolved, reporter)
    except SpecError as err:
        _say(str(err))
        return ExitCode.SPEC_INVALID

    prior = reporter.status()  # every rank reads it before rank 0 writes it, so all ranks agree on what follows
    if prior.get("status") == JobStatus.COMPLETE.value:
        reporter.log(f"job {job.id} is already complete; nothing to do")
        return ExitCode.COMPLETE
    if prior.get("status") == JobStatus.DEPLOYED.value:
        reporter.log(f"job {job.id} is deployed; nothing to train")
        return ExitCode.COMPLETE
    if is_main:
        job.create()
        atomic_write_json(job.spec_path, resolved.to_json())
        base = {
            "id": job.id, "name": resolved.name, "status": JobStatus.REQUESTED.value,
            "created_at": prior.get("created_at") or utcnow(), "started_at": None, "finished_at": None,
            "progress": prior.get("progress") or {"step": 0, "total_steps": None, "epoch": 0, "eta_s": None},
            "error": None, "metrics": None, "base_model": resolved.base_model, "project_id": resolved.project_id,
            "training_type": resolved.training_type.value, "training_algorithm": resolved.training_algorithm.value,
            "attempts": int(prior.get("attempts") or 0),
        }
        job.write_status(base)
        job.clear_stop()  # a stop request belongs to the run it was made for

    metric, greater = BEST_METRIC[(entry.family, resolved.training_algorithm)]
    manager = CheckpointManager(job, base_model=entry.id, training_type=resolved.training_type.value,
                                family=entry.family.value, training_algorithm=resolved.training_algorithm.value,
                                is_main=is_main, keep_last=resolved.engine.keep_last,
                                best_metric=metric, greater_is_better=greater)
    control = RunControl(job)
    control.install_signal_handlers()
    device = _device()

    status_fields: dict[str, Any] = {}
    try:
        if world > 1:
            init_distributed(device)
            barrier()  # rank 0 has set the job up (status, stale STOP cleared) before any other rank reads it
        resume_from = manager.latest()
        reporter.update_status(status=JobStatus.RUNNING, started_at=utcnow(), finished_at=None, error=None,
                               attempts=int(reporter.status().get("attempts") or 0) + 1)
        reporter.log(f"job {job.id} ({resolved.name}): {entry.id} {resolved.training_type.value} "
                     f"{resolved.training_algorithm.value}, {world} process(es)")
        if resume_from is not None:
            reporter.log(f"resuming from checkpoint {resume_from.uuid} (step {resume_from.step})")

        init_manifest = init_path = None
        if is_checkpoint_uuid(resolved.base_model):
            init_manifest, init_path = find_checkpoint(resolved.base_model, home)
            reporter.log(f"starting from checkpoint {init_manifest.uuid} of job {init_manifest.job_id} "
                         f"(step {init_manifest.step})")
        with _main_first():  # a base model built on first use is built once, by rank 0
            model_path = resolve_model(entry, home)
        model = ResolvedModel(entry=entry, path=Path(model_path), init_checkpoint=init_path, init_manifest=init_manifest)

        registry = DatasetRegistry(home, owner=resolved.engine.dataset_owner)

        def resolve_ds(name: str) -> ResolvedDataset:
            m = registry.get(name)
            return ResolvedDataset(name=m.name, path=registry.data_path(name), format=str(getattr(m.format, "value", m.format)),
                                   num_records=m.num_records, columns=list(m.columns or []))

        train_data = [resolve_ds(d.name) for d in resolved.datasets]
        eval_data = resolve_ds(resolved.engine.eval.dataset) if resolved.engine.eval.dataset else None
        for ds in train_data:
            reporter.log(f"dataset {ds.name}: {ds.num_records} records ({ds.format})")
        if eval_data:
            reporter.log(f"eval dataset {eval_data.name}: {eval_data.num_records} records")
        status_fields["data"] = {ds.name: ds.num_records for ds in train_data}
        reporter.update_status(**status_fields)

        ctx = TrainContext(spec=resolved, job=job, reporter=reporter, checkpoints=manager, control=control,
                           model=model, train_data=train_data, eval_data=eval_data, resume_from=resume_from,
                           is_main_process=is_main, device=device)
        trainer = get_trainer(entry.family, resolved.training_algorithm)
        result = trainer(ctx)
    except KeyboardInterrupt as err:
        reporter.log("interrupted twice: leaving the job resumable from its last checkpoint", level="WARN")
        reporter.update_status(status=JobStatus.REQUESTED)
        return ExitCode.PREEMPTED
    except BaseException as err:  # the one place errors are caught: record, keep logs and checkpoints
        code = ExitCode.DATASET_INVALID if isinstance(err, DatasetError) else ExitCode.FAILED
        if isinstance(err, SpecError):
            code = _spec_exit_code(err)
        message = str(err) if isinstance(err, FelixError) else f"{type(err).__name__}: {err}"
        reporter.log(f"job failed: {message}", level="ERROR")
        if not isinstance(err, FelixError):
            reporter.log("".join(traceback.format_exception(err)), level="ERROR")
        reporter.update_status(status=JobStatus.FAILED, finished_at=utcnow(),
                               error={"type": type(err).__name__, "message": message, "where": _where(err),
                                      "errors": err.to_list() if hasattr(err, "to_list") else []})
        reporter.write_loss_plot()
        if not isinstance(err, Exception):
            raise
        return code

    last = result.last_checkpoint or manager.latest()
    if result.outcome == Outcome.COMPLETE:
        metrics = dict(result.metrics)
        reporter.update_status(status=JobStatus.COMPLETE, finished_at=utcnow(), metrics=metrics)
        reporter.write_loss_plot()
        reporter.log(f"job complete: model in {job.model_dir}")
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        if summary:
            reporter.log(f"metrics: {summary}")
        code = ExitCode.COMPLETE
    elif result.outcome == Outcome.STOPPED:
        if is_main:
            job.clear_stop()
        reporter.update_status(status=JobStatus.CANCELLED, finished_at=utcnow())
        reporter.write_loss_plot()
        reporter.log(f"stopped on request; checkpoint {last.uuid if last else None}; status cancelled")
        code = ExitCode.CANCELLED
    else:
        reporter.update_status(status=JobStatus.REQUESTED)
        reporter.write_loss_plot()
        reporter.log(f"preempted; checkpoint {last.uuid if last else None}; rerun the same spec with job id "
                     f"{job.id} to resume")
        code = ExitCode.PREEMPTED
    barrier()  # the ranks leave together, once rank 0 has written the outcome
    return code


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- distributed runs ------------------------------------------------------------------------------------------

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


def _leave_distributed() -> None:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def _main_first():
    """Rank 0 runs the block first, the other ranks once it is done (accelerate's `main_process_first`)."""
    from felix_train.trainers.context import barrier, distributed

    dist = distributed()
    main = dist is None or dist.get_rank() == 0
    if not main:
        barrier()
    yield
    if main:
        barrier()  # not reached when rank 0 failed: it records the failure, the launcher ends the others


def accelerate_config(config: str | None) -> Path | None:
    """The accelerate config file for `engine.distributed.config` (default `$FELIX_ACCELERATE_CONFIG`).

    A path (absolute, or relative to the working directory), or the name of a bundled config
    (`ddp`, `fsdp`, `deepspeed-zero2`, `deepspeed-zero3`, `multi-node`: `configs/accelerate/<name>.yaml`).

    Raises:
        SpecError: no such file.
    """
    config = config or os.environ.get(ACCELERATE_CONFIG_ENV) or None
    if config is None:
        return None
    path = Path(config).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, ACCELERATE_CONFIG_DIR / path,
                                                    ACCELERATE_CONFIG_DIR / f"{config}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    bundled = sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml")) if ACCELERATE_CONFIG_DIR.is_dir() else []
    raise SpecError([_item(("engine", "distributed", "config"),
                           f"no accelerate config {config!r} (looked in {', '.join(str(c) for c in candidates)}); "
                           f"give a path to one, or a bundled name: {', '.join(bundled) or 'none found'}",
                           "accelerate_config_not_found")])


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


def _die_with_parent(parent: int | None = None) -> None:
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
    env = dict(os.environ, **{EXIT_FILE_ENV: str(exit_path), "PYTHONUNBUFFERED": "1"})
    package_root = str(Path(__file__).resolve().parents[1])  # `-m felix_train` imports this very package
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    if echo:
        _say(f"[felix] job {job_id}: launching {num_processes} processes: {' '.join(cmd)}")

    received: list[int] = []
    launcher = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=functools.partial(_die_with_parent, os.getpid()))

    def forward(signum, frame) -> None:
        received.append(signum)
        what = _forward_signal(launcher, signum)
        if echo:
            _say(f"[felix] job {job_id}: signal {signum} forwarded to {what}")

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
            _say(f"[felix] job {job_id}: the ranks exited {code} ({ExitCode(code).name.lower()}); the launcher "
                 f"reports any non-zero exit as a failure (its ChildFailedError above), which it is not")
        return code
    # no rank 0 outcome: the launch failed, a rank crashed, or the ranks were killed before they could checkpoint
    code = ExitCode.PREEMPTED if received else ExitCode.FAILED
    if machine_rank != 0:
        return int(code)
    reporter = Reporter(job, echo=echo)
    status = reporter.status()
    message = (f"the distributed run ended (launcher exit code {rc}) without an outcome from rank 0"
               + (" after a forwarded signal; the job resumes from its last checkpoint when rerun" if received
                  else "; the launcher's output says why"))
    if job.root.is_dir():
        reporter.log(message, level="WARN" if received else "ERROR")
    if status.get("status") in (JobStatus.RUNNING.value, JobStatus.REQUESTED.value):
        if received:
            reporter.update_status(status=JobStatus.REQUESTED)
        else:
            reporter.update_status(status=JobStatus.FAILED, finished_at=utcnow(),
                                   error={"type": "LaunchFailed", "message": message, "where": "launcher", "errors": []})
    return int(code)
