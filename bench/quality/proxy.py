"""The trained-head proxy (issue 17 item 4): what fine-tuning from a trained GLiNER2 checkpoint learns and forgets.

1. A GLiNER2 trained with felix's defaults on the built-in quickstart set (`felix-ner-quickstart`: person,
   organization, location, date, product), less a seeded held-out slice (15 %).
2. Its served checkpoint's UUID (the job's `final_model_checkpoint`, else its last listed checkpoint) is the
   `base_model` of a second job on the WNUT-17 unseen-mention train part, defaults otherwise.
3. Both models are scored with `felix-train eval` on the WNUT-17 test part and on the quickstart held-out slice
   restricted to `date` (a label WNUT-17 never names: what was forgotten), and on the whole slice.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bench.children import say
from bench.quality.harness import CLI, Context, felix_eval, job_error, ner_figures, register, run_job
from bench.quality.split import read_records, write_records

QUICKSTART = "felix-ner-quickstart.jsonl"
HELD_OUT_SHARE = 0.15
QUICK_QS_TRAIN = 300


def quickstart_parts(ctx: Context, seed: int = 0) -> dict[str, Path]:
    """The quickstart set split into train / held-out (seeded), and the held-out slice restricted to `date`."""
    from felix_train.data.registry import BUILTIN_DIR

    records = read_records(BUILTIN_DIR / QUICKSTART)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    cut = round(HELD_OUT_SHARE * len(records))
    held = sorted(order[:cut])
    train = sorted(order[cut:])
    if ctx.quick:
        train = sorted(random.Random(seed).sample(train, min(QUICK_QS_TRAIN, len(train))))
    dates = [{"input": records[i]["input"],
              "output": {"entities": {"date": list(((records[i].get("output") or {}).get("entities") or {})
                                                   .get("date") or [])}}} for i in held]
    folder = ctx.folder("proxy-data")
    return {"train": write_records(folder / "quickstart-train.jsonl", [records[i] for i in train]),
            "held_out": write_records(folder / "quickstart-heldout.jsonl", [records[i] for i in held]),
            "date": write_records(folder / "quickstart-heldout-date.jsonl", dates)}


def served_checkpoint(ctx: Context, job: dict) -> str | None:
    """The checkpoint UUID the job serves (status metrics), else the last one `felix-train jobs checkpoints` lists."""
    import subprocess

    metrics = job.get("metrics") or {}
    uuid = metrics.get("final_model_checkpoint") or metrics.get("best_checkpoint")
    if uuid:
        return uuid
    done = subprocess.run([*CLI, "jobs", "checkpoints", job["job"], "--json"], env=ctx.env, capture_output=True,
                          text=True, timeout=300)
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return rows[-1]["uuid"] if rows else None


def _scores(ctx: Context, tag: str, job_id: str, tests: dict[str, Path]) -> dict:
    return {name: ner_figures(felix_eval(ctx, f"{tag}-{name}", job_id, path)) for name, path in tests.items()}


def run_proxy(ctx: Context, *, model_id: str, wnut_train_name: str, wnut_test: Path) -> dict:
    parts = quickstart_parts(ctx)
    register(ctx, "quickstart-train", parts["train"])
    tests = {"wnut17": wnut_test, "quickstart_date": parts["date"], "quickstart": parts["held_out"]}
    first = run_job(ctx, "q-proxy-quickstart", {"base_model": model_id, "datasets": [{"name": "quickstart-train"}]})
    out: dict = {"model": model_id, "quickstart_train_records": sum(1 for _ in open(parts["train"], encoding="utf-8")),
                 "trained_head": {"job": first["job"], "status": first["status"], "wall_s": first["wall_s"]}}
    if first["status"] != "complete":
        out["error"] = f"the quickstart {job_error(first)}"
        return out
    out["before"] = _scores(ctx, "q-proxy-before", first["job"], tests)
    uuid = served_checkpoint(ctx, first)
    if uuid is None:
        out["error"] = "the quickstart job lists no checkpoint"
        return out
    out["trained_head"]["checkpoint"] = uuid
    second = run_job(ctx, "q-proxy-wnut", {"base_model": uuid, "datasets": [{"name": wnut_train_name}]})
    out["fine_tuned"] = {"job": second["job"], "status": second["status"], "wall_s": second["wall_s"]}
    if second["status"] != "complete":
        out["error"] = f"the fine-tuning (from {uuid}) {job_error(second)}"
        return out
    out["after"] = _scores(ctx, "q-proxy-after", second["job"], tests)
    say(f"proxy: WNUT-17 F1 {out['before']['wnut17'].get('f1')} -> {out['after']['wnut17'].get('f1')}, date F1 "
        f"{out['before']['quickstart_date'].get('f1')} -> {out['after']['quickstart_date'].get('f1')}")
    return out
