"""One job's lifecycle: validate → resolve → run the trainer → status, exit code.

`run_job(spec)` is what `python -m felix_train SPEC`, `accelerate launch -m felix_train
SPEC` and orchestrator workers call. It catches errors once, at its edge: a failed
job gets `failed`, its error in status.json and its traceback in train.log, and keeps
its logs and checkpoints. Exit codes (DESIGN.md, `ExitCode`): 0 complete, 1 failed, 2 spec
invalid (a bad job id too), 3 dataset invalid, 4 cancelled by a stop request, 5 busy (another
run of the same job id holds its folder: this run is refused at once and touches nothing of it),
75 preempted (resumable).

One run per job: the run holds an exclusive OS lock on `jobs/<id>/.lock` (`JobLock`, `fcntl.flock`)
from before it touches the folder until it ends; the kernel drops it with its holder (a kill -9 never
leaves a stale one). On a resume, metrics.jsonl and events.jsonl are cut back to the resumed checkpoint's step
(events.jsonl gets one `resumed` event naming the checkpoint) and stale `work/staging-*` folders are removed.
Every ending writes its last log lines before its status, so a follower that stops at a terminal status has
read the whole log.

status.json is written as a typed `JobState` (`JobFolder.write_state` / `update_state`, through the
reporter), its `error` a `JobError`; a new job gets `felix_train.jobs.new_job_id()`.

Distributed runs (DDP, FSDP, DeepSpeed through `accelerate launch`): every rank runs `run_job`;
rank 0 alone writes the job folder (status, logs, metrics, manifests, the final model). The runner
joins the launcher's process group before training so that rank 0's setup (a fresh status, a stale
STOP file cleared) happens before any other rank looks, and the ranks leave together once rank 0
has written the outcome. A spec with `engine.distributed.num_processes` above 1 run as one process
(`python -m felix_train SPEC`, the worker, `run_job`) launches itself through `felix_train.launch`
(`launch_distributed`: `accelerate launch`, signal forwarding, rank 0's exit code).
"""

from __future__ import annotations

import os
import signal
import traceback
from pathlib import Path
from typing import Any

from felix_train.catalog import Algorithm, ModelFamily, is_checkpoint_uuid
from felix_train.checkpoints import CheckpointManager, find_checkpoint
from felix_train.errors import DatasetError, ErrorItem, FelixError, SpecError
from felix_train.jobs import (
    DATASET_ERROR_TYPES, ExitCode, JobBusy, JobError, JobFolder, JobLock, JobState, JobStatus, Progress,
    atomic_write_json, new_job_id, status_after_exit, utcnow, validate_job_id,
)
from felix_train.launch import (  # noqa: F401 - re-exported: `felix_train.runner.<name>` keeps working
    ACCELERATE_CONFIG_DIR, ACCELERATE_CONFIG_ENV, DIST_TIMEOUT_S, EXIT_FILE_ENV, MACHINE_ENV, accelerate_config,
    die_with_parent, distributed_rank, init_distributed, launch_command, launch_distributed, launched_rank,
    leave_distributed, lock_held_by_launcher, main_first, say, under_launcher, write_exit_code,
)
from felix_train.reporting import Reporter
from felix_train.spec import REPORT_TO_PACKAGES, JobSpec, ReportTo, load_spec_file, spec_from_json, validate_spec


# Which metric picks the best checkpoint, per (family, algorithm): (name, greater_is_better).
BEST_METRIC: dict[tuple[ModelFamily, Algorithm], tuple[str, bool]] = {
    (ModelFamily.GLINER2, Algorithm.SFT): ("eval_f1", True),
    (ModelFamily.CAUSAL_LM, Algorithm.SFT): ("eval_loss", False),
    (ModelFamily.CAUSAL_LM, Algorithm.DPO): ("eval_rewards/accuracies", True),
    (ModelFamily.CAUSAL_LM, Algorithm.GRPO): ("reward", True),
}

def _spec_exit_code(err: SpecError) -> ExitCode:
    if err.errors and all(e.type in DATASET_ERROR_TYPES for e in err.errors):
        return ExitCode.DATASET_INVALID
    return ExitCode.SPEC_INVALID


def check_trackers(spec: JobSpec) -> None:
    """Every tracker of `engine.report_to` has its package installed here (checked when the job starts, on the
    machine that trains: the API validating a spec may run without them).

    Raises:
        SpecError: one item per tracker whose package is missing, saying what to install.
    """
    import importlib.util

    packages = [(i, REPORT_TO_PACKAGES[ReportTo(r)]) for i, r in enumerate(spec.engine.report_to)]
    errors = [ErrorItem(("engine", "report_to", i), f"`engine.report_to` names {package}, but its package is not "
                        f"installed where the job runs; `pip install {package}`, or remove it from `engine.report_to`",
                        "report_to_unavailable")
              for i, package in packages if importlib.util.find_spec(package) is None]
    if errors:
        raise SpecError(errors)


def _fail_early(job: JobFolder, reporter: Reporter, err: BaseException, message: str) -> None:
    """Record a failure before training started (spec or dataset invalid on a named job)."""
    job.create()
    reporter.log(message, level="ERROR")
    fields: dict[str, Any] = {"id": job.id, "status": JobStatus.FAILED, "finished_at": utcnow(),
                              "error": JobError.of(err, message)}
    if job.read_state() is None:
        fields["created_at"] = utcnow()
    reporter.update_status(**fields)


def run_job(spec: str | os.PathLike | dict | JobSpec, *, job_id: str | None = None,
            home: str | os.PathLike | None = None, echo: bool = True) -> int:
    """Run one job to its end; returns the exit code (see `ExitCode`).

    A spec with `engine.distributed.num_processes` above 1, called outside a launcher, is launched
    with `accelerate launch` (`launch_distributed`); under a launcher, this process is one rank.
    """
    rank, world = distributed_rank()
    if launched_rank():
        die_with_parent()  # a rank of `launch_distributed`: never outlive the launcher
    code = _run_job(spec, job_id=job_id, home=home, echo=echo, rank=rank, world=world)
    write_exit_code(code)
    return code


def _run_job(spec, *, job_id, home, echo, rank: int, world: int) -> int:
    is_main = rank == 0

    # 1. load and validate
    invalid: SpecError | None = None
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
            say(str(err))
        invalid = err
    else:
        job_id = job_id or resolved.engine.job_id or new_job_id()

    # 2. the job id names a folder; nothing of it is touched before this run holds its lock
    if job_id is not None:
        try:
            validate_job_id(job_id)
        except ValueError as err:
            if is_main:
                say(f"invalid job id: {err}; pick another `--job-id`")
            return int(_spec_exit_code(invalid) if invalid is not None else ExitCode.SPEC_INVALID)
    try:
        lock = _take_lock(job_id, home, rank)
    except JobBusy as err:
        say(str(err))
        return int(ExitCode.BUSY)
    try:
        if invalid is not None:
            if job_id:  # a queued job: the worker and API must see why it failed
                job = JobFolder(job_id, home)
                _fail_early(job, Reporter(job, is_main=is_main, echo=False), invalid, str(invalid))
            return int(_spec_exit_code(invalid))
        if launch:
            return launch_distributed(data, job_id=job_id, home=home,
                                      num_processes=resolved.engine.distributed.num_processes, config=config, echo=echo)
        return _run_here(resolved, job_id=job_id, home=home, echo=echo, is_main=is_main, world=world)
    finally:
        if lock is not None:
            lock.release()


def _take_lock(job_id: str | None, home, rank: int) -> JobLock | None:
    """The job folder's lock (`JobLock`), taken by the process that owns the run: rank 0 (or the one process of a
    run without a launcher), or the launching process of a `launch_distributed` run, whose rank 0 then finds it
    held by its ancestor (`lock_held_by_launcher`). Other ranks, and the launching processes of machines other
    than machine 0 (`FELIX_MACHINE_RANK`), take none. Raises `JobBusy` when another run holds it."""
    if job_id is None or rank != 0 or lock_held_by_launcher(job_id):
        return None
    if not under_launcher() and int(os.environ.get("FELIX_MACHINE_RANK") or 0) != 0:
        return None
    return JobFolder(job_id, home).lock().acquire()


def _run_here(resolved: JobSpec, *, job_id: str, home, echo: bool, is_main: bool, world: int) -> int:
    job = JobFolder(job_id, home)
    reporter = Reporter(job, is_main=is_main, echo=echo and is_main,
                        tensorboard=ReportTo.TENSORBOARD in resolved.engine.report_to)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = _run(resolved, job, reporter, home, is_main, world)
        if code in (ExitCode.COMPLETE, ExitCode.CANCELLED, ExitCode.PREEMPTED):
            leave_distributed()  # every rank is here (a failed rank leaves without: the launcher ends the others)
        return int(code)
    finally:
        reporter.close()
        for sig, handler in previous.items():  # an embedding worker gets its own handlers back
            signal.signal(sig, handler)


def _reopen(job: JobFolder, resolved: JobSpec, reporter: Reporter) -> JobSpec:
    """A rerun of an existing job keeps its stored name; a different spec is refused.

    The stored spec is read through today's `JobSpec` first, so a field added to the spec since the job was
    written (absent from its `spec.json`) takes its default on both sides rather than refusing the rerun:
    a new field's default is the behaviour of the code that wrote the job.
    """
    stored = job.read_spec()
    if stored is None:
        return resolved
    try:
        stored = spec_from_json(stored).to_json()
    except ValueError:  # a spec.json today's model refuses: compared as written, which refuses the rerun
        pass
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
        raise SpecError([ErrorItem((k,), f"job {job.id} already exists with a different `{k}`; rerun it with its "
                               "original spec to resume, or use a new job id", "job_spec_mismatch") for k in diff])
    if isinstance(stored.get("engine"), dict) and "distributed" in new.get("engine", {}):
        stored = {**stored, "engine": {**stored["engine"], "distributed": new["engine"]["distributed"]}}
    return spec_from_json(stored)


_RELAUNCH_KEYS = ("job_id", "home", "distributed")


def _run(resolved: JobSpec, job: JobFolder, reporter: Reporter, home, is_main: bool, world: int) -> ExitCode:
    from felix_train.models import resolve_model
    from felix_train.trainers import get_trainer
    from felix_train.trainers.context import (
        Outcome, ResolvedModel, RunControl, TrainContext, barrier, resolve_datasets,
    )

    entry = resolved.entry()
    try:
        resolved = _reopen(job, resolved, reporter)
    except SpecError as err:
        say(str(err))
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
        job.write_state(JobState(
            id=job.id, name=resolved.name, status=JobStatus.REQUESTED, created_at=prior.get("created_at") or utcnow(),
            started_at=None, finished_at=None, progress=prior.get("progress") or Progress(), error=None, metrics=None,
            base_model=resolved.base_model, project_id=resolved.project_id,
            training_type=resolved.training_type.value, training_algorithm=resolved.training_algorithm.value,
            attempts=int(prior.get("attempts") or 0), hyperparameters=resolved.hyperparameters(),
        ))
        job.clear_stop()  # a stop request belongs to the run it was made for

    metric, greater = BEST_METRIC[(entry.family, resolved.training_algorithm)]
    manager = CheckpointManager(job, base_model=entry.id, training_type=resolved.training_type.value,
                                family=entry.family.value, training_algorithm=resolved.training_algorithm.value,
                                is_main=is_main, keep_last=resolved.engine.keep_last,
                                best_metric=metric, greater_is_better=greater)
    control = RunControl(job, reporter)
    control.install_signal_handlers()
    device = _device()

    status_fields: dict[str, Any] = {}
    try:
        if world > 1:
            init_distributed(device)
            barrier()  # rank 0 has set the job up (status, stale STOP cleared) before any other rank reads it
        check_trackers(resolved)
        resume_from = manager.latest()
        if is_main:  # what a killed run left behind: metric lines past the checkpoint resumed, staged checkpoints
            cut = reporter.cut_metrics(resume_from.step if resume_from else 0)
            if cut:
                reporter.log(f"metrics.jsonl: {cut} line(s) after step {resume_from.step if resume_from else 0} "
                             "removed (logged after the last checkpoint; training repeats those steps)")
            reporter.cut_events(resume_from.step if resume_from else 0, resumed=None if resume_from is None else
                                {"from_step": resume_from.step, "checkpoint": resume_from.uuid})
            manager.remove_stale_staging()  # work/staging-* a killed run left (each a whole uncommitted checkpoint)
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
        with main_first():  # a base model built on first use is built once, by rank 0
            model_path = resolve_model(entry, home)
        model = ResolvedModel(entry=entry, path=Path(model_path), init_checkpoint=init_path, init_manifest=init_manifest)

        train_data, eval_data = resolve_datasets(resolved, home)
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
    except KeyboardInterrupt:
        reporter.log("interrupted twice: leaving the job resumable from its last checkpoint", level="WARN")
        reporter.update_status(status=status_after_exit(ExitCode.PREEMPTED, file_status=None))
        return ExitCode.PREEMPTED
    except BaseException as err:  # the one place errors are caught: record, keep logs and checkpoints
        code = ExitCode.DATASET_INVALID if isinstance(err, DatasetError) else ExitCode.FAILED
        if isinstance(err, SpecError):
            code = _spec_exit_code(err)
        message = str(err) if isinstance(err, FelixError) else f"{type(err).__name__}: {err}"
        reporter.log(f"job failed: {message}", level="ERROR")
        if not isinstance(err, FelixError):
            reporter.log("".join(traceback.format_exception(err)), level="ERROR")
        reporter.write_loss_plot()
        reporter.update_status(status=JobStatus.FAILED, finished_at=utcnow(), error=JobError.of(err, message))
        if not isinstance(err, Exception):
            raise
        return code

    # every ending logs first and writes its status last: a follower (`jobs logs ID -f`) stops at a terminal
    # status, so the log must be whole by then
    last = result.last_checkpoint or manager.latest()
    reporter.write_loss_plot()
    if result.outcome == Outcome.COMPLETE:
        metrics = dict(result.metrics)
        reporter.log(f"job complete: model in {job.model_dir}")
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        if summary:
            reporter.log(f"metrics: {summary}")
        code = ExitCode.COMPLETE
        reporter.update_status(status=JobStatus.COMPLETE, finished_at=utcnow(), metrics=metrics)
        if is_main:
            _record_throughput(resolved, metrics, device, job, reporter, home)
    elif result.outcome == Outcome.STOPPED:
        if is_main:
            job.clear_stop()
        code = ExitCode.CANCELLED
        reporter.log(f"stopped on request; checkpoint {last.uuid if last else None}; status cancelled")
        reporter.update_status(status=status_after_exit(code, file_status=None), finished_at=utcnow())
    else:
        code = ExitCode.PREEMPTED
        reporter.log(f"preempted; checkpoint {last.uuid if last else None}; rerun the same spec with job id "
                     f"{job.id} to resume")
        reporter.update_status(status=status_after_exit(code, file_status=None))
    barrier()  # the ranks leave together, once rank 0 has written the outcome
    return code


def _record_throughput(resolved: JobSpec, metrics: dict, device: str, job: JobFolder, reporter: Reporter,
                       home) -> None:
    """The job's row in the throughput table (`felix_train.estimate.table`); a failure costs the row, not the job."""
    from datetime import datetime

    try:
        from felix_train.estimate import record_completed

        started = reporter.status().get("started_at")
        wall = (datetime.now(datetime.fromisoformat(started).tzinfo) - datetime.fromisoformat(started)).total_seconds() \
            if started else None
        record_completed(resolved, metrics, device=device, wall_s=wall, job_id=job.id, home=home)
    except Exception as err:  # noqa: BLE001
        reporter.log(f"throughput table not updated ({type(err).__name__}: {err})", level="WARN")


def _device() -> str:
    from felix_train.perf.hardware import pick_device

    return pick_device()
