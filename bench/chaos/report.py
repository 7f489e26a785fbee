"""The tables `make chaos` prints: the fault run's counts against their targets, and the store's figures at scale."""

from __future__ import annotations


def _table(rows: list[tuple], right_from: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i < right_from else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


def chaos_table(result: dict) -> str:
    s, run = result["summary"], result["run"]
    n = s["jobs_submitted"]
    fired = sum(s["faults_fired"].values())
    rows = [("fault run", "count", "target", "")]
    add = rows.append
    add(("jobs submitted", n, "", ""))
    add(("faults fired / scheduled", f"{fired} / {sum(s['faults_scheduled'].values())}", "", ""))
    for kind, count in sorted(s["faults_scheduled"].items()):
        add((f"  {kind}", f"{s['faults_fired'].get(kind, 0)} / {count}", "", ""))
    add(("completed", s["completed"], "", ""))
    add(("cancelled (stops accepted)", f"{s['cancelled']} ({s['stops_accepted']})", "", ""))
    codes = ", ".join(f"{k}×{v}" for k, v in s["failed_codes"].items()) or "-"
    add(("failed (codes)", f"{s['failed']} ({codes})", "", ""))
    add(("unfinished (requested/running/lost)", s["unfinished"], 0, _ok(s["unfinished"] == 0)))
    add(("ended in the state the schedule implies", f"{s['as_expected']} / {n}", n, _ok(s["as_expected"] == n)))
    add(("worker runs (runs per job: jobs)", f"{s['worker_runs']} ({_hist(s['runs_per_job'])})", "", ""))
    add(("resumes from a checkpoint", s["resumes"], "", ""))
    agree = all(s["references_agree"].values()) and bool(s["references_agree"])
    add(("references agree with each other", str(s["references_agree"]), True, _ok(agree)))
    ic = s["interrupted_complete"]
    add(("final loss = reference (complete jobs)", f"{s['loss_identical']} / {s['completed']}", s["completed"],
         _ok(s["loss_identical"] == s["completed"])))
    add(("  of which interrupted and resumed", f"{s['loss_identical_interrupted']} / {ic}", ic,
         _ok(s["loss_identical_interrupted"] == ic)))
    add(("duplicate submissions refused / accepted", f"{s['dup_submits_refused']} / {s['dup_submits_accepted']}",
         "all / 0", _ok(s["dup_submits_accepted"] == 0)))
    add(("duplicated metric lines (jobs)", f"{s['duplicated_metric_lines']} ({s['jobs_with_duplicated_metrics']})", 0,
         _ok(s["duplicated_metric_lines"] == 0)))
    add(("duplicated step events (events.jsonl)", s.get("duplicated_step_events", 0), 0,
         _ok(s.get("duplicated_step_events", 0) == 0)))
    add(("jobs with unordered event ids", s.get("jobs_with_unordered_event_ids", 0), 0,
         _ok(s.get("jobs_with_unordered_event_ids", 0) == 0)))
    add(("last status event != status.json", s.get("jobs_whose_last_status_event_disagrees", 0), 0,
         _ok(s.get("jobs_whose_last_status_event_disagrees", 0) == 0)))
    add(("missing loss steps (complete jobs)", s["missing_loss_steps"], 0, _ok(s["missing_loss_steps"] == 0)))
    add(("leftover work/staging-* folders", s["staging_leftovers"], 0, _ok(s["staging_leftovers"] == 0)))
    add(("leftover temp files", s["temp_leftovers"], 0, _ok(s["temp_leftovers"] == 0)))
    add(("corrupt files", s["corrupt_files"], 0, _ok(s["corrupt_files"] == 0)))
    add(("complete without model/", s["complete_without_model"], 0, _ok(s["complete_without_model"] == 0)))
    add(("store status != status.json", s["store_vs_status_json"], 0, _ok(s["store_vs_status_json"] == 0)))
    rcs = ", ".join(f"rc {k}×{v}" for k, v in sorted(dup_rcs(run).items())) or "-"
    add(("duplicate runs by hand (exit codes)", f"{len(run.get('dup_runs', []))} ({rcs})", "refused", ""))
    unexpected = len(run.get("worker_unexpected_exits", []))
    add(("worker restarts (unexpected exits)", f"{run.get('worker_restarts', 0)} ({unexpected})", "", ""))
    add(("stray processes at the end", len(run.get("strays", [])), 0, _ok(not run.get("strays"))))
    loads = [x for _, x in run.get("load1", [])]
    phases = run.get("phases", {})
    add(("wall s (references, faults)", f"{result.get('wall_s')} ({phases.get('refs_s')}, {phases.get('chaos_s')})",
         "", ""))
    if loads:
        add(("1-min load min/mean/max", f"{min(loads):.1f}/{sum(loads) / len(loads):.1f}/{max(loads):.1f}", "", ""))
    return _table(rows)


def dup_rcs(run: dict) -> dict:
    out: dict = {}
    for d in run.get("dup_runs", []):
        out[d["rc"]] = out.get(d["rc"], 0) + 1
    return out


def _hist(h: dict) -> str:
    return ", ".join(f"{k}:{v}" for k, v in h.items())


def dup_run_table(dup_runs: list[dict]) -> str:
    if not dup_runs:
        return ""
    rows = [("duplicate run (by hand)", "rc", "last line")]
    for d in dup_runs:
        rows.append((d["job_id"][:20], d["rc"], (d["log_tail"] or [""])[-1][:90]))
    return _table(rows, right_from=1)


def scale_table(result: dict) -> str:
    rows = [("store at scale", "rows", "p50 ms", "p99 ms", "store p50 ms", "target", "")]
    for backend in ("sqlite", "postgresql"):
        b = result.get(backend)
        if not b:
            continue
        for stage, st in b["stages"].items():
            rows.append((f"{backend} {int(stage):,} rows (heavy user {st['heavy_user_rows']:,})", "", "", "", "", "", ""))
            for label, m in st["list"].items():
                big = int(stage) >= 100_000
                rows.append((f"  GET {label}", m["rows"], m["p50_ms"], m["p99_ms"], m["store_p50_ms"],
                             "<50" if big else "", _ok(m["p99_ms"] < 50) if big else ""))
            rows.append(("  POST /felix/training-jobs", "", st["post"]["p50_ms"], st["post"]["p99_ms"], "", "", ""))
            c = st["claims"]
            claim = c["claim"] or {}
            rows.append((f"  claims/s, {c['workers']} processes", c["claims"], claim.get("p50_ms", "-"),
                         claim.get("p99_ms", "-"), "", f"{c['claims_per_s']}/s", ""))
    return _table(rows)


def scale_summary(result: dict) -> str:
    """One line per measure, one column per backend and stage: `p50 / p99` ms (GET, POST), claims per second."""
    cols = [(backend, stage, st) for backend in ("sqlite", "postgresql") if result.get(backend)
            for stage, st in result[backend]["stages"].items()]
    if not cols:
        return ""
    rows = [("p50 / p99 ms", *(f"{'pg' if b == 'postgresql' else b} {int(s):,}" for b, s, _ in cols))]

    def pick(prefix: str) -> list[str]:
        out = []
        for _, _, st in cols:
            m = next((v for k, v in st["list"].items() if k.startswith(prefix)), None)
            out.append(f"{m['p50_ms']:.0f} / {m['p99_ms']:.0f}" if m else "-")
        return out

    for label, prefix in [("GET heavy user, first page (200)", "heavy user, first page"),
                          ("GET typical user, first page", "typical user, first page"),
                          ("GET heavy, status=complete", "heavy, status=complete"),
                          ("GET heavy, project_id=p3", "heavy, project_id=p3"),
                          ("GET typical, status+project_id", "typical, status=complete&project_id"),
                          ("GET heavy, deep offset", "heavy, offset="),
                          ("GET heavy, deep cursor (after)", "heavy, after=")]:
        rows.append((label, *pick(prefix)))
    rows.append(("POST /felix/training-jobs", *(f"{st['post']['p50_ms']:.0f} / {st['post']['p99_ms']:.0f}"
                                               for _, _, st in cols)))
    rows.append(("claims/s, 4 processes", *(f"{st['claims']['claims_per_s']}" for _, _, st in cols)))
    return _table(rows)
