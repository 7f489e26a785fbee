"""The fallback when the throughput table has no row: a short measured probe of the job itself.

`probe(spec_json, home)` runs the job for `PROBE_STEPS` optimizer steps (no eval split, no checkpoints beyond
the last) in a child process (`python -m felix_train run`), in a temporary `$FELIX_HOME` whose `models/`,
`datasets/` and `cache/` link to the real ones; the child's runner records the row in the temporary table,
which is read back marked `source: probe`. The child imports torch; this module does not.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from felix_train.estimate.table import read_table
from felix_train.jobs import felix_home

PROBE_STEPS = 4
PROBE_TIMEOUT_S = 900


def probe_spec(spec_json: dict, steps: int = PROBE_STEPS) -> dict:
    data = copy.deepcopy(spec_json)
    data.pop("catalog_model", None)
    eng = data.setdefault("engine", {})
    eng.update(max_steps=steps, job_id=None, home=None, save_steps=None, logging_steps=1)
    eng["eval"] = {**(eng.get("eval") or {}), "fraction": 0.0, "dataset": None}
    if isinstance(eng.get("export"), dict):
        eng["export"]["merged"] = False
    return data


def probe(spec_json: dict, home=None, *, steps: int = PROBE_STEPS, timeout_s: float = PROBE_TIMEOUT_S) -> dict | None:
    """The probe's table row (`source: probe`), or None when it did not complete."""
    real = felix_home(home)
    with tempfile.TemporaryDirectory(prefix="felix-probe-") as tmp:
        tmp_home = Path(tmp) / "home"
        tmp_home.mkdir()
        for name in ("models", "datasets", "cache"):
            (real / name).mkdir(parents=True, exist_ok=True)
            os.symlink(real / name, tmp_home / name)
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(probe_spec(spec_json, steps)))
        env = {**os.environ, "FELIX_HOME": str(tmp_home), "FELIX_PEAK_PROBE": "0"}
        out = subprocess.run([sys.executable, "-m", "felix_train", "--home", str(tmp_home), "run", str(spec_file),
                              "--job-id", "probe"], env=env, capture_output=True, text=True, timeout=timeout_s)
        rows = list(read_table(tmp_home).values())
        if out.returncode != 0 or not rows:
            return None
        return {**rows[0], "source": "probe", "probe_steps": steps}
