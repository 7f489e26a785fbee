"""`make chaos`: the service under faults (issue 16's chaos benchmark), and the store's cost as its rows grow.

A benchmark, not a test: it measures and reports, and fails only when it cannot run.

| module | |
|---|---|
| `__main__.py` | `python -m bench.chaos [--only chaos|scale] ...`: both parts, the tables, the JSON in `bench/results/` |
| `schedule.py` | the seeded plan: jobs (tiny LLM SFT, tiny GLiNER2), faults, the step each fires at, the specs |
| `faults.py` | the fault run: references, then the jobs under two worker processes, each fault fired at its step |
| `procs.py` | the processes: worker slots refilled after a kill, duplicate runs, /proc look-ups, the final clean-up |
| `audit.py` | every job folder and row checked: end state against the schedule, losses, duplicates, leftovers, corrupt files |
| `scale.py` | 100,000 rows over 1,000 users (SQLite, PostgreSQL): list and POST latency through the app, claims/s |
| `report.py` | the printed tables |
"""
