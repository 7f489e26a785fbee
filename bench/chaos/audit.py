"""After the fault run: what every job folder and store row shows, job by job, and the counts the issue targets.

Per job: the store's final status and error code, the state its schedule implies (a stop that was
accepted → `cancelled`; else `complete`, unless its run-ending faults used up `--max-attempts`), runs
(worker launches in runner.log, claims in the store, runs counted in status.json), resumes (train.log),
the loss at the last step against the uninterrupted references, metric lines logged twice for one
step or missing, `work/staging-*` folders and temp files left behind, and corrupt files: every
status.json / spec.json / request.json / checkpoint.json must parse, every metrics.jsonl line too,
every checkpoint's files must match their sha256 in its manifest (`verify_checkpoint`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from bench.chaos.schedule import RUN_ENDING, FaultKind, JobKind, JobPlan


def metric_lines(path: Path) -> tuple[list[dict], str | None]:
    """metrics.jsonl's records, and the error of its first bad line (None when every line parses)."""
    from felix_train.jsonl import JSONLError, iter_jsonl

    records: list[dict] = []
    if not path.exists():
        return records, None
    try:
        for _, rec in iter_jsonl(path):
            records.append(rec if isinstance(rec, dict) else {})
    except JSONLError as err:
        return records, str(err)
    return records, None


def _kind(rec: dict) -> str:
    if "loss" in rec:
        return "loss"
    if "train_loss" in rec:
        return "summary"
    if any(str(k).startswith("eval_") for k in rec):
        return "eval"
    return "other"


def final_loss(records: list[dict], steps: int) -> float | None:
    """The training loss logged at the last step (the last such line: a rerun's wins)."""
    values = [r["loss"] for r in records if r.get("step") == steps and "loss" in r]
    return values[-1] if values else None


def corrupt_files(folder: Path) -> list[str]:
    """Files of a job folder that do not parse, or checkpoint files whose sha256 does not match."""
    from felix_train.checkpoints import MANIFEST, CheckpointManifest, verify_checkpoint
    from felix_train.jobs import JobState

    bad = []
    for name in ("status.json", "spec.json", "request.json"):
        path = folder / name
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if name == "status.json":
                    JobState.model_validate(data)
            except ValueError as err:
                bad.append(f"{name}: {str(err).splitlines()[0][:120]}")
    _, err = metric_lines(folder / "metrics.jsonl")
    if err:
        bad.append(f"metrics.jsonl: {err}")
    ckpts = folder / "checkpoints"
    for ckpt in sorted(ckpts.iterdir()) if ckpts.is_dir() else []:
        try:
            CheckpointManifest.model_validate(json.loads((ckpt / MANIFEST).read_text(encoding="utf-8")))
            mismatched = verify_checkpoint(ckpt)
        except (OSError, ValueError) as err:
            bad.append(f"checkpoints/{ckpt.name}/{MANIFEST}: {str(err).splitlines()[0][:120]}")
            continue
        bad += [f"checkpoints/{ckpt.name}/{p}: sha256 mismatch" for p in mismatched]
    return bad


def leftovers(folder: Path) -> dict[str, list[str]]:
    work = folder / "work"
    staging = sorted(p.name for p in work.glob("staging-*")) if work.is_dir() else []
    temp = sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if p.name.endswith(".tmp") or ".old." in p.name)
    return {"staging": staging, "temp": temp}


def expected_status(plan: JobPlan, max_attempts: int) -> str:
    if any(f.kind == FaultKind.STOP and f.outcome == "accepted" for f in plan.faults):
        return "cancelled"
    ended = sum(f.kind in RUN_ENDING and f.outcome == "fired" for f in plan.faults)
    return "failed" if ended >= max_attempts else "complete"


def _error_code(error: dict | None) -> str | None:
    if not error:
        return None
    return str(error.get("code") or error.get("type") or "?")


def event_audit(folder: Path) -> dict:
    """events.jsonl after the faults: ids strictly increasing, no step event twice (a resume cuts the events of the
    steps it repeats), and a final `status_changed` that agrees with status.json."""
    from felix_train.events import iter_events

    events = list(iter_events(folder))
    ids = [e["id"] for e in events]
    stepped = Counter((e["type"], e["step"]) for e in events if isinstance(e.get("step"), int))
    statuses = [e["data"].get("status") for e in events if e["type"] == "status_changed" and e["data"].get("status")]
    return {"events": len(events), "event_ids_ordered": all(a < b for a, b in zip(ids, ids[1:])),
            "duplicated_step_events": sum(n - 1 for n in stepped.values() if n > 1),
            "last_status_event": statuses[-1] if statuses else None}


def audit_job(home: Path, row, steps: int) -> dict:
    """What one job's folder and row show (no judgement yet)."""
    folder = home / "jobs" / row.id
    records, _ = metric_lines(folder / "metrics.jsonl")
    keyed = Counter((_kind(r), r.get("step")) for r in records)
    loss_steps = {r.get("step") for r in records if "loss" in r}
    train_log = (folder / "train.log").read_text(encoding="utf-8", errors="replace") if (folder / "train.log").exists() else ""
    runner_log = (folder / "runner.log").read_text(encoding="utf-8", errors="replace") if (folder / "runner.log").exists() else ""
    try:
        state = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    return {
        "job_id": row.id, "status": row.status.value, "error_code": _error_code(row.error),
        "error": (row.error or {}).get("message", "")[:300] if row.error else None,
        "file_status": state.get("status"), "store_attempts": row.attempts, "file_attempts": state.get("attempts"),
        "worker_runs": sum(1 for line in runner_log.splitlines() if line.startswith("--- ")),
        "resumes": train_log.count("resuming from checkpoint"),
        "final_loss": final_loss(records, steps),
        "train_loss": (row.metrics or {}).get("train_loss") if row.metrics else None,
        "duplicated_metric_lines": sum(n - 1 for n in keyed.values() if n > 1),
        "missing_loss_steps": len(set(range(1, steps + 1)) - loss_steps) if row.status.value == "complete" else None,
        "corrupt": corrupt_files(folder) if folder.is_dir() else [],
        **leftovers(folder),
        "model": (folder / "model").is_dir() and any((folder / "model").iterdir()),
        **event_audit(folder),
    }


def audit(home: Path, store, plans: list[JobPlan], refs: dict[str, JobKind], *, steps: int,
          max_attempts: int) -> dict:
    """Every job judged against its schedule and the references; the summary counts."""
    from felix_train.service.store import JobNotFound

    def row(job_id):
        try:
            return store.get_job(job_id=job_id)
        except JobNotFound:
            return None

    ref_rows = {job_id: row(job_id) for job_id in refs}
    references: dict[str, list] = {k.value: [] for k in JobKind}
    ref_audits = []
    for job_id, kind in refs.items():
        if ref_rows[job_id] is None:
            continue
        a = audit_job(home, ref_rows[job_id], steps)
        ref_audits.append({**a, "kind": kind.value})
        if a["status"] == "complete" and a["final_loss"] is not None:
            references[kind.value].append(a["final_loss"])
    jobs = []
    for plan in plans:
        r = row(plan.job_id) if plan.job_id else None
        if r is None:
            jobs.append({"index": plan.index, "kind": plan.kind.value, "job_id": plan.job_id, "status": "lost"})
            continue
        a = audit_job(home, r, steps)
        ref = references[plan.kind.value]
        a.update(index=plan.index, kind=plan.kind.value, expected=expected_status(plan, max_attempts),
                 faults=[f"{f.kind.value}@{f.step}:{f.outcome}" for f in plan.faults],
                 interrupted=any(f.kind in RUN_ENDING and f.outcome == "fired" for f in plan.faults))
        a["as_expected"] = a["status"] == a["expected"]
        a["loss_identical"] = (a["final_loss"] == ref[0]) if ref and a["final_loss"] is not None else None
        jobs.append(a)
    return {"references": references, "reference_jobs": ref_audits, "jobs": jobs,
            "summary": summarize(jobs, plans, ref_audits, references)}


def summarize(jobs: list[dict], plans: list[JobPlan], ref_audits: list[dict], references: dict) -> dict:
    statuses = Counter(j["status"] for j in jobs)
    faults = [f for p in plans for f in p.faults]
    complete = [j for j in jobs if j["status"] == "complete"]
    interrupted = [j for j in complete if j.get("interrupted")]
    dup_submits = [f for f in faults if f.kind == FaultKind.DUP_SUBMIT and f.fired_at is not None]
    every = jobs + ref_audits
    return {
        "jobs_submitted": len(jobs),
        "completed": statuses.get("complete", 0),
        "cancelled": statuses.get("cancelled", 0),
        "failed": statuses.get("failed", 0),
        "failed_codes": dict(Counter(j["error_code"] for j in jobs if j["status"] == "failed")),
        "unfinished": sum(statuses.get(s, 0) for s in ("requested", "running", "lost")),
        "as_expected": sum(bool(j.get("as_expected")) for j in jobs),
        "not_as_expected": [f"{j.get('job_id', '')[:16]} {j['kind']}: {j['status']} (want {j.get('expected')})"
                            for j in jobs if not j.get("as_expected")],
        "faults_scheduled": dict(Counter(f.kind.value for f in faults)),
        "faults_fired": dict(Counter(f.kind.value for f in faults if f.fired_at is not None)),
        "faults_skipped": sum(f.fired_at is None for f in faults),
        "stops_accepted": sum(f.kind == FaultKind.STOP and f.outcome == "accepted" for f in faults),
        "dup_submits_refused": sum((f.outcome or "").startswith("refused") for f in dup_submits),
        "dup_submits_accepted": sum(f.outcome == "accepted" for f in dup_submits),
        "runs_per_job": dict(sorted(Counter(j.get("worker_runs", 0) for j in jobs).items())),
        "worker_runs": sum(j.get("worker_runs", 0) for j in jobs),
        "resumes": sum(j.get("resumes", 0) for j in jobs),
        "references_agree": {k: len(set(v)) == 1 for k, v in references.items() if v},
        "interrupted_complete": len(interrupted),
        "loss_identical": sum(j.get("loss_identical") is True for j in complete),
        "loss_different": sum(j.get("loss_identical") is False for j in complete),
        "loss_identical_interrupted": sum(j.get("loss_identical") is True for j in interrupted),
        "duplicated_metric_lines": sum(j.get("duplicated_metric_lines", 0) for j in every),
        "jobs_with_duplicated_metrics": sum(j.get("duplicated_metric_lines", 0) > 0 for j in every),
        "missing_loss_steps": sum(j.get("missing_loss_steps") or 0 for j in every),
        "duplicated_step_events": sum(j.get("duplicated_step_events", 0) for j in every),
        "jobs_with_unordered_event_ids": sum(not j.get("event_ids_ordered", True) for j in every),
        "jobs_whose_last_status_event_disagrees": sum(
            j.get("last_status_event") not in (None, j.get("file_status")) for j in every),
        "staging_leftovers": sum(len(j.get("staging", [])) for j in every),
        "temp_leftovers": sum(len(j.get("temp", [])) for j in every),
        "corrupt_files": sum(len(j.get("corrupt", [])) for j in every),
        "corrupt_examples": [f"{j['job_id'][:16]}: {c}" for j in every for c in j.get("corrupt", [])][:10],
        "complete_without_model": sum(j["status"] == "complete" and not j.get("model") for j in every),
        "store_vs_status_json": sum(j.get("file_status") not in (None, j["status"]) for j in every),
    }
