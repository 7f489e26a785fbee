"""The worker: claims `requested` jobs and pending deployments from the store and supervises their processes.

`felix-train worker [--concurrency N] [--poll S] [--worker-id ID] [--heartbeat-timeout S] [--max-attempts N]`

| module | |
|---|---|
| `core.py` | `Worker`: the loop (claim, tick, drain, graceful shutdown) |
| `runs.py` | job runs: one `python -m felix_train run` child per claimed job, heartbeated, stop forwarded, its exit mapped by `felix_train.jobs.status_after_exit` |
| `deployments.py` | deployments: one inference process (`python -m felix_train.service.serving`) per deployed job, health-checked |
| `base.py` | the settings and child-process plumbing both share |
| `cli.py` | `felix-train worker` (`python -m felix_train.service.worker`) |

The worker also recovers the work of dead workers: any worker requeues a `running` job whose
heartbeat is older than `--heartbeat-timeout` (its next run resumes from the last checkpoint),
and hands back the deployments of a worker that stopped heartbeating. A run killed by a signal
(an OOM kill, a node drain) or preempted is requeued the same way; after `--max-attempts` runs
the job is `failed` with a stable `error.code` (`out_of_memory`, `killed`, `preempted_too_often`,
`worker_lost`: `store.RunErrorCode`).

A child also gets SIGTERM if the worker itself dies (Linux parent-death signal), so a SIGKILLed
worker leaves no orphan training behind. A worker serves at most `--max-deployments` models at
once (0: it serves none). Inference processes listen on loopback only and the API forwards to
them there, so with workers on several machines only those on the API's machine should serve
(the others: `--max-deployments 0`).

The child commands are parameters (`runner_cmd`, `--runner-cmd`; `serving_cmd`): tests run quick fake
jobs behind the same interface.
"""

from __future__ import annotations

from felix_train.service.worker.base import default_runner_cmd, default_serving_cmd, default_worker_id
from felix_train.service.worker.cli import build_parser, main
from felix_train.service.worker.core import Worker
from felix_train.service.worker.runs import REQUEST_FILE, RUNNER_LOG

__all__ = ["REQUEST_FILE", "RUNNER_LOG", "Worker", "build_parser", "default_runner_cmd", "default_serving_cmd",
           "default_worker_id", "main"]
