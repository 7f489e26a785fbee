"""What the eval tests share: tiny datasets, and training a job on one (`train`).

Imported as `eval_helpers` (pytest puts this folder on sys.path for the modules beside it).
"""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

PEOPLE = ["John Smith", "Mary Jones", "David Brown", "Sarah Miller"]
CITIES = ["London", "Paris", "Berlin", "Tokyo"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ner_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, c = rng.choice(PEOPLE), rng.choice(CITIES)
        if rng.random() < 0.2:
            out.append({"input": "we went home early .", "output": {"entities": {"person": []}}})
        else:
            out.append({"input": f"{p} lives in {c} .", "output": {"entities": {"person": [p], "location": [c]}}})
    return out


def chat_records(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"The answer is {2 * i}."}]} for i in range(n)]


def preference_records(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Please add {i} and {i}."}],
             "chosen": [{"role": "assistant", "content": "Sure, happy to help."}],
             "rejected": [{"role": "assistant", "content": "No. Go away."}]} for i in range(n)]


def prompt_records(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "word": "the", "answer": str(2 * i)}
            for i in range(n)]


def train(home: Path, data_dir: Path, job_id: str, records: list[dict], spec: dict) -> str:
    """Register `records` as dataset `job_id`, run the job to its end, return its id."""
    import torch

    from felix_train import run_job
    from felix_train.data.registry import DatasetRegistry
    from felix_train.jobs import JobFolder

    torch.set_num_threads(1)
    manifest = DatasetRegistry(home).add(job_id, write_jsonl(data_dir / f"{job_id}.jsonl", records), overwrite=True)
    assert manifest.state.value == "ready", manifest.errors
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = run_job({**spec, "datasets": [{"name": job_id}]}, job_id=job_id, home=home)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert code == 0, JobFolder(job_id, home).read_status().get("error")
    return job_id


LLM_ENGINE = {"batch_size": 4, "logging_steps": 1, "max_length": 64, "seed": 7, "report_to": [],
              "eval": {"fraction": 0}}
