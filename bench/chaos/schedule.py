"""The seeded fault schedule: which job gets which fault at which training step, and the jobs' specs.

`make_schedule(seed, ...)` is a pure function of its arguments: the same seed gives the same jobs
(alternating tiny LLM SFT and tiny GLiNER2), the same faults on the same jobs at the same steps. A fault
fires once the job's run has trained past its step (a resumed run counts from its checkpoint; a duplicate
run starts once the worker's run is up), so what differs between two runs of the bench is only the moment
inside a step, not the plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class JobKind(str, Enum):
    LLM = "llm"
    GLINER2 = "gliner2"


class FaultKind(str, Enum):
    KILL_RUN = "kill_run"  # kill -9 of the job's training process (the worker's `felix_train run` child)
    KILL_WORKER = "kill_worker"  # kill -9 of the worker running the job, then a new worker in its place
    TERM_WORKER = "term_worker"  # SIGTERM of that worker (it drains), then a new worker once it exited
    STOP = "stop"  # `Store.request_stop` (the API's `POST .../stop`)
    DUP_SUBMIT = "dup_submit"  # `Store.create_job` again with the job's id and spec
    DUP_RUN = "dup_run"  # `python -m felix_train SPEC --job-id ID` by hand once the worker's run is up


FAULT_WEIGHTS = {FaultKind.KILL_RUN: 0.30, FaultKind.KILL_WORKER: 0.15, FaultKind.TERM_WORKER: 0.15,
                 FaultKind.STOP: 0.14, FaultKind.DUP_SUBMIT: 0.13, FaultKind.DUP_RUN: 0.13}
RUN_ENDING = (FaultKind.KILL_RUN, FaultKind.KILL_WORKER, FaultKind.TERM_WORKER)
"""Faults that end the job's current run (the next run must resume it)."""
MAX_FAULTS_PER_JOB = 4


@dataclass
class Fault:
    index: int
    kind: FaultKind
    job: int
    step: int
    """Fires once the job's current run has trained to this step (or beyond)."""
    fired_at: float | None = None
    outcome: str | None = None
    """What happened: `fired`, `skipped: ...`, `refused: ...`, `accepted`, ..."""
    detail: dict = field(default_factory=dict)


@dataclass
class JobPlan:
    index: int
    kind: JobKind
    faults: list[Fault] = field(default_factory=list)
    job_id: str | None = None
    owner_id: int | None = None

    @property
    def stops(self) -> bool:
        return any(f.kind == FaultKind.STOP for f in self.faults)


def fault_counts(total: int) -> dict[FaultKind, int]:
    """`total` split over the kinds by `FAULT_WEIGHTS` (largest remainder, so the counts add up)."""
    raw = {k: w * total for k, w in FAULT_WEIGHTS.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[:total - sum(counts.values())]:
        counts[k] += 1
    return counts


def make_schedule(*, seed: int, jobs: int, faults: int, max_steps: int, max_attempts: int) -> list[JobPlan]:
    """`jobs` plans with `faults` faults spread over them.

    A job gets at most one stop (its last fault, at the highest step), at most `MAX_FAULTS_PER_JOB` faults,
    and fewer run-ending faults than `max_attempts - 1`, so no job runs out of attempts by design. A
    duplicate run has step 0: it starts as soon as the worker's run is up, so the two overlap.

    Raises:
        ValueError: `faults` do not fit on `jobs` jobs under those caps, or `max_steps` is under 16.
    """
    if max_steps < 16:
        raise ValueError(f"--steps must be at least 16 (faults land between steps 3 and steps-6), got {max_steps}")
    run_ending_cap = max(max_attempts - 2, 0)
    rng = random.Random(seed)
    plans = [JobPlan(index=i, kind=JobKind.LLM if i % 2 == 0 else JobKind.GLINER2) for i in range(jobs)]
    kinds = [k for k, n in fault_counts(faults).items() for _ in range(n)]
    # stops first (one per job), then the run-ending faults (capped), then the rest
    kinds.sort(key=lambda k: (k != FaultKind.STOP, k not in RUN_ENDING))
    for index, kind in enumerate(kinds):
        def fits(p: JobPlan) -> bool:
            if len(p.faults) >= MAX_FAULTS_PER_JOB or (kind == FaultKind.STOP and p.stops):
                return False
            return kind not in RUN_ENDING or sum(f.kind in RUN_ENDING for f in p.faults) < run_ending_cap
        candidates = [p for p in plans if fits(p)]
        if not candidates:
            raise ValueError(f"{faults} faults do not fit on {jobs} jobs (at most {MAX_FAULTS_PER_JOB} per job, "
                             f"{run_ending_cap} run-ending with --max-attempts {max_attempts}): add --jobs")
        plan = rng.choice(candidates)
        last = max_steps - (10 if kind == FaultKind.STOP else 6)
        stop = next((f for f in plan.faults if f.kind == FaultKind.STOP), None)
        if stop is not None:  # before the stop (stops were placed first)
            last = max(stop.step - 1, 3)
        step = 0 if kind == FaultKind.DUP_RUN else rng.randint(3, last)  # a dup run: once the worker's run is up
        plan.faults.append(Fault(index=index, kind=kind, job=plan.index, step=step))
    for plan in plans:  # in step order; a stop is always the job's last fault
        plan.faults.sort(key=lambda f: (f.kind == FaultKind.STOP, f.step))
    return plans


def job_spec(kind: JobKind, *, max_steps: int, save_steps: int, seed: int) -> dict:
    """The spec every job of `kind` runs (the same for the chaos jobs and their uninterrupted references)."""
    engine = {"seed": seed, "batch_size": 4, "max_steps": max_steps, "save_steps": save_steps, "logging_steps": 1,
              "eval": {"fraction": 0}, "report_to": []}
    if kind == JobKind.LLM:
        return {"base_model": "felix/tiny-llm", "datasets": [{"name": "felix-chat-mini"}], "training_algorithm": "sft",
                "learning_rate": 5.0e-3,
                "engine": {**engine, "max_length": 256, "lora": {"r": 8, "target_modules": "all-linear"}}}
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "felix-ner-quickstart"}], "engine": engine}
