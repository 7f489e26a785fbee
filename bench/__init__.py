"""`make bench`: felix against the script a user would write by hand with the plain libraries, on this machine.

- `run.py`: the runner (`python bench/run.py [--quick] [--only ...]`, what `make bench` calls) and its options;
  its docstring says what is measured and how.
- `suites.py`: one function per benchmark (SFT LoRA, GLiNER2, `felix-train validate`, predict latency).
- `children.py`: running one measured child process, reading its probe, medians and felix/baseline ratios.
- `report.py`: the printed table and the machine description in the results file.
- `probe.py`: the timing probe each measured child runs under (optimizer steps, real tokens, peak RSS).
- `baselines/`: the plain TRL (`trl_sft.py`) and gliner2 (`gliner2_direct.py`) scripts felix is measured against.
- `predict.py`: the API → deployed model latency bench (a server, a worker, two short jobs, deployed).
- `results/`: one JSON per run, `<date>-<host>.json` (gitignored).

Nothing here is part of the installed package; the runner and its children put the repository root on `sys.path`.
"""
