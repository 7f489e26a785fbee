"""A quick job run behind the worker's child-process interface: `fake_runner.py SPEC --job-id ID --home HOME`.

It keeps the runner's contract with real felix_train code (JobFolder, CheckpointManager,
atomic status.json, train.log, metrics.jsonl, checkpoints/<uuid>/checkpoint.json, model/,
exit codes 0/1/4/75, STOP file, SIGTERM → checkpoint → 75) but trains nothing, so the
worker and API tests run in seconds. The spec's `fake` section (or, for specs validated by the API,
`$FELIX_HOME/fake_options.json`: `{job name: options}`) steers it:

    steps (4), step_s (0.01), checkpoint_every (1), exit_code (None: a crash without status),
    fail (False), hang_at_step (None: on a first run only, wait for a signal or STOP there),
    kill_at_step (None: on each of the first `kill_runs` (1) runs, send itself `kill_signal` (9) at this step,
    or at its first step when it resumed past it, after that step's checkpoint), oom_events (None: a
    memory.events file whose `oom_kill` counter it bumps first, as the kernel's OOM killer would),
    busy_runs (0: the first N runs exit 5 at once, touching nothing, as the runner does when another run
    holds the job's lock; counted in `$FELIX_HOME/.busy-<id>`, outside the job folder)

Each run appends one line to `jobs/<id>/fake_runs.jsonl`: {pid, worker_id, resumed_from, start_step}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from felix_train.checkpoints import CheckpointManager
from felix_train.jobs import JobFolder, append_line, atomic_write_json, read_json, utcnow

_signalled = False


def _on_term(signum, frame):
    global _signalled
    _signalled = True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored, and Python keeps it so: restore the
    # default, so that `kill_signal: SIGINT` kills this run as it would a foreground one
    signal.signal(signal.SIGINT, signal.default_int_handler)

    spec = read_json(args.spec)
    # options: the spec's `fake` section, or (for specs that went through the API's validation)
    # `$FELIX_HOME/fake_options.json`: {job name: options}
    options_file = read_json(os.path.join(args.home, "fake_options.json"), default={}) or {}
    fake = spec.get("fake") or options_file.get(spec.get("name"), {})
    steps = int(fake.get("steps", 4))
    step_s = float(fake.get("step_s", 0.01))
    every = int(fake.get("checkpoint_every", 1))
    job = JobFolder(args.job_id, args.home)
    busy_count = os.path.join(args.home, f".busy-{args.job_id}")
    if int(fake.get("busy_runs", 0)):
        seen = int(open(busy_count).read()) if os.path.exists(busy_count) else 0
        if seen < int(fake["busy_runs"]):
            with open(busy_count, "w") as fh:
                fh.write(str(seen + 1))
            return 5
    job.create()
    prior = read_json(job.status_path, default={}) or {}
    if prior.get("status") == "complete":
        return 0
    atomic_write_json(job.spec_path, spec)
    manager = CheckpointManager(job, base_model=spec.get("base_model", "felix/tiny-gliner2"),
                                training_type=spec.get("training_type", "lora"), family="gliner2", keep_last=2)
    resume = manager.latest()
    start_step = resume.step if resume else 0
    run_number = len((job.root / "fake_runs.jsonl").read_text().splitlines()) + 1 \
        if (job.root / "fake_runs.jsonl").exists() else 1
    append_line(job.root / "fake_runs.jsonl", json.dumps({
        "pid": os.getpid(), "worker_id": os.environ.get("FELIX_WORKER_ID"),
        "resumed_from": resume.uuid if resume else None, "start_step": start_step}))

    status = {"id": job.id, "name": spec.get("name", job.id), "status": "running",
              "created_at": prior.get("created_at") or utcnow(), "started_at": utcnow(), "finished_at": None,
              "progress": {"step": start_step, "total_steps": steps, "epoch": 0, "eta_s": None},
              "error": None, "metrics": None, "attempts": int(prior.get("attempts") or 0) + 1}
    job.write_status(status)
    append_line(job.log_path, f"{utcnow()} INFO  job {job.id}: fake run of {steps} steps")
    if resume:
        append_line(job.log_path, f"{utcnow()} INFO  resuming from checkpoint {resume.uuid} (step {resume.step})")

    if "exit_code" in fake:
        return int(fake["exit_code"])
    if fake.get("fail"):
        append_line(job.log_path, f"{utcnow()} ERROR job failed: ValueError: the fake run was told to fail")
        error = {"type": "ValueError", "message": "the fake run was told to fail", "where": "", "errors": []}
        status.update(status="failed", finished_at=utcnow(), error=error)
        job.write_status(status)
        return 1

    def checkpoint(step: int) -> None:
        staged = manager.stage()
        (staged / "weights.txt").write_text(f"step {step}\n")
        manager.commit(staged, step=step, epoch=step / steps, metrics={"loss": 1.0 / step})

    hang_at = fake.get("hang_at_step") if resume is None else None
    kill_at = fake.get("kill_at_step") if run_number <= int(fake.get("kill_runs", 1)) else None
    for step in range(start_step + 1, steps + 1):
        time.sleep(step_s)
        loss = 1.0 / step
        append_line(job.metrics_path, json.dumps({"step": step, "loss": loss, "time": utcnow()}))
        append_line(job.log_path, f"{utcnow()} INFO  step {step}/{steps} loss {loss:.4f}")
        status["progress"] = {"step": step, "total_steps": steps, "epoch": step / steps, "eta_s": 0.0}
        job.write_status(status)
        if step % every == 0 or step == hang_at:
            checkpoint(step)
        if kill_at is not None and step >= kill_at:
            if step % every:
                checkpoint(step)
            if fake.get("oom_events"):
                events = fake["oom_events"]
                counts = dict(line.split() for line in open(events).read().splitlines() if line.strip())
                counts["oom_kill"] = str(int(counts.get("oom_kill", 0)) + 1)
                with open(events, "w") as fh:
                    fh.write("".join(f"{k} {v}\n" for k, v in counts.items()))
            os.kill(os.getpid(), int(fake.get("kill_signal", signal.SIGKILL)))  # SIGTERM: handled below (75)
        if step == hang_at:
            append_line(job.log_path, f"{utcnow()} INFO  waiting for a signal or a stop request")
            while not (_signalled or job.stop_requested()):
                time.sleep(0.02)
        if job.stop_requested():
            job.clear_stop()
            if manager.latest() is None or manager.latest().step != step:
                checkpoint(step)
            status.update(status="cancelled", finished_at=utcnow())
            job.write_status(status)
            append_line(job.log_path, f"{utcnow()} INFO  stopped on request; status cancelled")
            return 4
        if _signalled:
            if manager.latest() is None or manager.latest().step != step:
                checkpoint(step)
            status.update(status="requested")
            job.write_status(status)
            append_line(job.log_path, f"{utcnow()} INFO  preempted; rerun to resume")
            return 75

    job.model_dir.mkdir(parents=True, exist_ok=True)
    (job.model_dir / "config.json").write_text(json.dumps({"fake": True, "steps": steps}))
    (job.model_dir / "weights.bin").write_bytes(b"\x00\x01" * 64)
    status.update(status="complete", finished_at=utcnow(), metrics={"loss": 1.0 / steps, "eval_f1": 0.5})
    job.write_status(status)
    append_line(job.log_path, f"{utcnow()} INFO  job complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
