#!/usr/bin/env python
"""`make quality`: what felix's defaults learn, beside what a user would get otherwise, on data the jobs never saw.

Usage:
    python bench/quality/run.py [--only ner,ner-full,proxy,sft,dpo,grpo] [--seeds 42,43] [--quick]
        [--gliner-model ID] [--train-limit N] [--test-limit N] [--threads N] [--home DIR] [--out FILE]

A benchmark, not a test: fixed seeds and budgets, every training and every scoring in its own process
(`OMP_WAIT_POLICY=PASSIVE`), JSON under `bench/results/quality-<date>-<host>.json`, tables on stdout.

- `ner` (LoRA) and `ner-full` (full fine-tuning): felix's defaults, gliner2's own `ExtractorTrainer` with its
  defaults, and the plain Hugging Face token-classification recipe, on an unseen-mention split of
  `../shared/data/ner/wnut17_train.jsonl` (`ner.py`, `split.py`); micro-F1, P, R, per-label F1, wall time, and
  the ratios felix/gliner2 and felix/token-classification as `<name>: <felix> vs <baseline> = <ratio>x`.
- `proxy`: the trained-head proxy (`proxy.py`): quickstart-trained GLiNER2, then WNUT-17 from its checkpoint UUID;
  WNUT-17 F1 and quickstart `date` F1 before → after.
- `sft`, `dpo`, `grpo`: SmolLM2-135M-Instruct, base → trained on held-out data (`rl.py`).

`--quick` keeps every default and shrinks the data (NER: 300 train / 200 test records; RL: a few records and
steps, see `rl.BUDGETS`, `rl.QUICK_SPEC`): it proves the harness end to end, its figures mean little.
`--gliner-model felix/tiny-gliner2` with `--train-limit`/`--test-limit` is for developing the harness.
Runs that need `../shared/data` are skipped with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `python bench/quality/run.py`: the bench package and felix_train live here

from bench.children import materialise, say  # noqa: E402
from bench.quality.harness import Context  # noqa: E402
from bench.quality.report import tables  # noqa: E402
from bench.report import machine  # noqa: E402

PARTS = ("ner", "ner-full", "proxy", "sft", "dpo", "grpo")
GLINER_MODEL = "felix/gliner2-minilm-l6"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--seeds", default="42", help="comma-separated training seeds for the NER sides (default 42)")
    p.add_argument("--quick", action="store_true", help="small data and step budgets: proves the harness runs")
    p.add_argument("--gliner-model", default=GLINER_MODEL, help="GLiNER2 base for the NER sides and the proxy")
    p.add_argument("--train-limit", type=int, default=None, help="NER: keep a seeded sample of N train records")
    p.add_argument("--test-limit", type=int, default=None, help="NER: keep a seeded sample of N test records")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every child (default: as is)")
    p.add_argument("--home", default=None, help="$FELIX_HOME for the children (default: a fresh temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary $FELIX_HOME (jobs, models, logs)")
    p.add_argument("--out", default=None, help="results file (default bench/results/quality-<date>-<host>.json)")
    args = p.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = args.only - set(PARTS)
    if unknown:
        p.error(f"--only takes {', '.join(PARTS)}; got {', '.join(sorted(unknown))}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds takes comma-separated integers, e.g. 42,43; got {args.seeds!r}")
    return args


def run_parts(ctx: Context, args: argparse.Namespace, results: dict) -> None:
    """Fill `results` part by part (a failure keeps the parts done)."""
    from bench.quality.ner import TRAIN_NAME, prepare_split, run_ner
    from bench.quality.proxy import run_proxy
    from bench.quality.rl import MODEL as LLM, run_rl

    ner_parts = {"ner", "ner-full", "proxy"} & args.only
    rl_parts = {"sft", "dpo", "grpo"} & args.only
    wanted = ([args.gliner_model] if ner_parts else []) + ([LLM] if rl_parts else [])
    say(f"home {ctx.home}; materialising {', '.join(wanted) or 'nothing'} (not timed)")
    models = materialise(ctx.env, wanted)
    if ner_parts:
        split = prepare_split(ctx, args.train_limit, args.test_limit)
        base = models.get(args.gliner_model, {})
        if "skipped" in split:
            for part in ("ner", "proxy"):
                results[part] = dict(split)
        elif "error" in base:
            for part in ("ner", "proxy"):
                results[part] = {"skipped": base["error"]}
        else:
            from felix_train.models.gliner2 import minilm_path

            types = [t for t, part in (("lora", "ner"), ("full", "ner-full")) if part in args.only]
            if types:
                run_ner(ctx, split, model_id=args.gliner_model, base_path=base["path"], encoder=str(minilm_path()),
                        training_types=types, out=results.setdefault("ner", {}))
            if "proxy" in args.only:
                results["proxy"] = run_proxy(ctx, model_id=args.gliner_model, wnut_train_name=TRAIN_NAME,
                                             wnut_test=Path(split["test_path"]))
    if rl_parts:
        if "error" in models.get(LLM, {}):
            results["rl"] = {"model": LLM, **{p: {"skipped": models[LLM]["error"]} for p in rl_parts}}
        else:
            results["rl"] = run_rl(ctx, rl_parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    temp = None if args.home else tempfile.mkdtemp(prefix="felix-quality-")
    home = Path(args.home or temp).resolve()
    ctx = Context.create(home, args.threads, quick=args.quick, seeds=args.seeds)
    if not ctx.data_dir.is_dir():
        say(f"{ctx.data_dir} is absent: the NER, proxy, SFT, DPO and GSM8K runs are skipped "
            "(the arithmetic GRPO run needs no shared data)")
    started = time.time()
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "options": {"only": sorted(args.only), "seeds": args.seeds, "quick": args.quick,
                                 "gliner_model": args.gliner_model, "train_limit": args.train_limit,
                                 "test_limit": args.test_limit, "threads": args.threads},
                     "load_start": os.getloadavg()}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / \
        f"quality-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}.json"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill PID` still writes the results so far
    try:
        run_parts(ctx, args, results)
    finally:
        results["load_end"] = os.getloadavg()
        results["total_s"] = round(time.time() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        if temp and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)
    print(tables(results))
    load_start = tuple(round(x, 2) for x in results["load_start"])
    load_end = tuple(round(x, 2) for x in results["load_end"])
    print(f"\nload average (1/5/15 min): start {load_start}, end {load_end} on {os.cpu_count()} CPUs; "
          f"{results['total_s']:.0f} s in all" + (f"; home kept at {home}" if temp and args.keep else ""))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
