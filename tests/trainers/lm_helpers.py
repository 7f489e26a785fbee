"""What the SFT, DPO and GRPO tests share: dataset registration, the job's logged losses, and a SIGTERM preemption.

Imported as `lm_helpers` (pytest puts this folder on sys.path for the test modules beside it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from felix_train.checkpoints import list_checkpoints
from felix_train.data.registry import DatasetRegistry
from felix_train.jobs import JobFolder

ROOT = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def register(home: Path, tmp_path: Path, name: str, records: list[dict]) -> str:
    manifest = DatasetRegistry(home).add(name, write_jsonl(tmp_path / f"{name}.jsonl", records), overwrite=True)
    assert manifest.state.value == "ready", manifest.errors
    return name


def rows(job: JobFolder) -> list[dict]:
    return [json.loads(line) for line in job.metrics_path.read_text().splitlines()]


def step_losses(job: JobFolder) -> dict[int, float]:
    """step -> logged training loss (a step logged twice keeps its last value)."""
    return {r["step"]: r["loss"] for r in rows(job) if "loss" in r}


def when_logged(job: JobFolder, action, timeout: float = 120.0) -> threading.Thread:
    """Call `action()` as soon as the job has logged its first training step."""

    def loop():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if job.metrics_path.exists() and '"loss"' in job.metrics_path.read_text():
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


class Preempted:
    """`python -m felix_train SPEC --job-id ID` SIGTERMed after its first logged step: exit 75, `requested`,
    one checkpoint before step `total_steps`. `rerun()` runs the same command to the end."""

    def __init__(self, home: Path, tmp_path: Path, data: dict, job_id: str, total_steps: int):
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps(data), encoding="utf-8")
        self.env = {**os.environ, "FELIX_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.cmd = [sys.executable, "-m", "felix_train", str(spec_path), "--job-id", job_id]
        self.job = JobFolder(job_id, home)
        proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        when_logged(self.job, lambda: proc.send_signal(signal.SIGTERM), timeout=240)
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 75, stderr.decode()[-3000:]
        assert self.job.read_status()["status"] == "requested"
        (self.checkpoint,) = list_checkpoints(self.job)
        assert 1 <= self.checkpoint.step < total_steps

    def rerun(self) -> subprocess.CompletedProcess:
        done = subprocess.run(self.cmd, check=False, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=240)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return done
