#!/usr/bin/env python
"""One felix NER run of `make quality`'s protocol with spec overrides: how the GLiNER2 defaults were chosen.

Usage:
    python bench/quality/tune.py TAG SEED ['{"num_epochs": 3, "engine": {"span_loss": {"focal_gamma": 2}}}']
        [--home DIR] [--results FILE]

Trains `felix/gliner2-minilm-l6` on the train part of `make quality`'s unseen-mention split of
`../shared/data/ner/wnut17_train.jsonl` (its test part is carved from the training file, so tuning on it
leaves the real WNUT-17 test untouched), with the overrides merged into `{base_model, datasets}` and
`engine.seed` = SEED, then scores the test part with `felix-train eval` at the thresholds the job saved and at
0.5. One JSON line per run is appended to `--results` (default `<home>/tune.jsonl`): micro P/R/F1 and
per-label F1 both ways, the job's own eval metrics, wall time, and the load average at start and end.
The home (default `/tmp/felix-tune`) keeps the materialised base and the split between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.children import materialise  # noqa: E402
from bench.quality.harness import Context, felix_eval, job_error, merge_spec, ner_figures, run_job  # noqa: E402
from bench.quality.ner import TRAIN_NAME, prepare_split  # noqa: E402
from bench.quality.run import GLINER_MODEL  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tag")
    p.add_argument("seed", type=int)
    p.add_argument("overrides", nargs="?", default="{}", help="JSON merged into the spec")
    p.add_argument("--home", default="/tmp/felix-tune")
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)
    home = Path(args.home).resolve()
    ctx = Context.create(home, None, seeds=[args.seed])
    marker = home / "split.json"
    if not marker.exists():
        materialise(ctx.env, [GLINER_MODEL])
        marker.write_text(json.dumps(prepare_split(ctx)))
    split = json.loads(marker.read_text())
    test = Path(split["test_path"])
    spec = merge_spec({"base_model": GLINER_MODEL, "datasets": [{"name": TRAIN_NAME}]}, json.loads(args.overrides))
    spec = merge_spec(spec, {"engine": {"seed": args.seed}})
    job = f"{args.tag}-s{args.seed}"
    out = {"tag": args.tag, "seed": args.seed, "spec": spec, "load_start": os.getloadavg()}
    run = run_job(ctx, job, spec)
    out.update(status=run["status"], wall_s=run["wall_s"])
    if run["status"] == "complete":
        out["saved"] = ner_figures(felix_eval(ctx, job, job, test))
        out["at_0.5"] = ner_figures(felix_eval(ctx, f"{job}-05", job, test, threshold=0.5))
        out["job_eval"] = {k: v for k, v in run["metrics"].items() if k.startswith("eval_")}
    else:
        out["error"] = job_error(run)
    out["load_end"] = os.getloadavg()
    results = Path(args.results) if args.results else home / "tune.jsonl"
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(out) + "\n")
    print(json.dumps(out, indent=1))
    return 0 if run["status"] == "complete" else 1


if __name__ == "__main__":
    raise SystemExit(main())
