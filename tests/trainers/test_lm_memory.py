"""Micro-batches planned from the memory model (`trainers.lm_memory`): the plan, the machine's limit, and real SFT and
DPO jobs whose split batches (and checkpointing) give the losses of the unsplit run."""

from __future__ import annotations

import pytest

from felix_train import run_job
from felix_train.errors import DatasetError
from felix_train.jobs import JobFolder
from felix_train.perf.hardware import memory_limit_mb
from felix_train.perf.micro_batches import HEADROOM, MEMORY_LIMIT_ENV, plan_micro_batches
from lm_helpers import register, step_losses
from test_dpo import preference_records
from test_dpo import spec as dpo_spec
from test_sft import chat_records
from test_sft import spec as sft_spec


def linear(rows: int, seq_len: int, ckpt: bool) -> float:
    """A fake peak: 1 MB per token without checkpointing, 0.1 MB with."""
    return rows * seq_len * (0.1 if ckpt else 1.0)


def test_a_batch_that_fits_is_left_as_asked():
    plan = plan_micro_batches(linear, batch_size=8, rows_per_example=2, longest=100, budget_mb=1600)
    assert (plan.micro_batch, plan.splits, plan.checkpointing, plan.peak_mb) == (8, 1, False, 1600)


def test_the_largest_dividing_micro_batch_that_fits_comes_before_checkpointing():
    plan = plan_micro_batches(linear, batch_size=8, rows_per_example=2, longest=100, budget_mb=799)
    assert (plan.micro_batch, plan.splits, plan.checkpointing) == (2, 4, False)  # 4 is 800 MB, 2 is 400
    plan = plan_micro_batches(linear, batch_size=6, rows_per_example=1, longest=100, budget_mb=450)
    assert (plan.micro_batch, plan.splits) == (3, 2)  # divisors only: the batches stay equal
    plan = plan_micro_batches(linear, batch_size=8, rows_per_example=2, longest=100, budget_mb=199)
    assert (plan.micro_batch, plan.splits, plan.checkpointing) == (8, 1, True)  # 160 MB checkpointed
    plan = plan_micro_batches(linear, batch_size=8, rows_per_example=2, longest=100, budget_mb=100,
                              checkpointing=True)  # asked for by the spec: only checkpointed plans
    assert (plan.micro_batch, plan.checkpointing) == (4, True)


def test_nothing_fits_says_how_long_the_example_is_and_what_to_change():
    with pytest.raises(DatasetError) as err:
        plan_micro_batches(linear, batch_size=4, rows_per_example=2, longest=5000, budget_mb=500)
    msg = str(err.value)
    assert "5000 tokens a row" in msg and "engine.max_length" in msg and "rl_config.max_length" in msg
    assert "length_policy: truncate" in msg and MEMORY_LIMIT_ENV in msg


def test_machine_limit_is_memtotal_capped_by_the_cgroup(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       4194304 kB\nMemFree:  100 kB\n")
    root = tmp_path / "cgroup"
    (root / "jobs" / "a").mkdir(parents=True)
    proc = tmp_path / "self_cgroup"
    proc.write_text("0::/jobs/a\n")
    assert memory_limit_mb(root=root, proc_cgroup=proc, meminfo=meminfo) == 4096
    (root / "jobs" / "a" / "memory.max").write_text("max\n")
    (root / "jobs" / "memory.max").write_text(f"{1024 * 2**20}\n")  # a parent's limit applies
    assert memory_limit_mb(root=root, proc_cgroup=proc, meminfo=meminfo) == 1024
    assert memory_limit_mb(root=root, proc_cgroup=proc, meminfo=tmp_path / "none") == 1024
    assert memory_limit_mb(root=tmp_path / "no-cgroup", proc_cgroup=proc, meminfo=tmp_path / "none") is None


def _record_micro_batches(monkeypatch, trainer_cls) -> list[int]:
    """The rows of every micro-batch `trainer_cls` trains on (the first dimension of its first tensor)."""
    seen: list[int] = []
    original = trainer_cls.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        seen.append(next(v.shape[0] for v in inputs.values() if hasattr(v, "shape")))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_cls, "training_step", training_step)
    return seen


def _fake_model(monkeypatch, per_row_mb: float, ckpt_row_mb: float, limit_rows: float) -> None:
    """The memory model replaced by `rows × per_row_mb` (checkpointed: `ckpt_row_mb`), and a limit whose budget
    holds `limit_rows` rows: the tiny model needs far less than any machine has."""
    import felix_train.perf.memory as memory

    def fake(*args, batch_size: int, checkpointing: bool = False, **kwargs):
        return {"peak_mb": batch_size * (ckpt_row_mb if checkpointing else per_row_mb)}

    monkeypatch.setattr(memory, "predict_memory", fake)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(limit_rows * per_row_mb / HEADROOM + 1))


@pytest.mark.parametrize("mode", ["split", "checkpointed"])
def test_dpo_split_batches_give_the_losses_of_the_whole_batch(model_store, tmp_path, monkeypatch, mode):
    home = model_store
    name = register(home, tmp_path, f"mem-dpo-{mode}", preference_records(16, seed=3))
    data = dpo_spec(name, max_steps=4, packing=False, eval={"fraction": 0})  # random batches; DPO drops dropout
    assert run_job(data, job_id=f"mem-dpo-whole-{mode}", home=home, echo=False) == 0
    whole = step_losses(JobFolder(f"mem-dpo-whole-{mode}", home))
    # batch 4 pairs = 8 rows; the budget holds 4 rows (2 pairs), or, checkpointed, 1 pair's 2 rows only as 0.1 each
    _fake_model(monkeypatch, 100.0, 10.0, 4 if mode == "split" else 1)
    from felix_train.trainers.dpo import _DPOTrainer

    seen = _record_micro_batches(monkeypatch, _DPOTrainer)
    job = JobFolder(f"mem-dpo-{mode}", home)
    assert run_job(data, job_id=job.id, home=home, echo=False) == 0, job.read_status().get("error")
    log = job.log_path.read_text()
    if mode == "split":
        assert "memory: 2 micro-batches of 2 (4 rows) per batch of 4;" in log
    else:
        assert "memory: batches of 4 (8 rows) as asked, activation checkpointing on" in log
    assert seen == ([4] * 8 if mode == "split" else [8] * 4)  # rows a micro-batch: chosen and rejected
    split = step_losses(job)
    assert sorted(split) == sorted(whole) == [1, 2, 3, 4]
    for step in whole:
        assert split[step] == pytest.approx(whole[step], rel=1e-4, abs=1e-6), step
    assert job.read_status()["metrics"]["steps"] == 4


def test_sft_split_batches_give_the_losses_of_the_whole_batch(model_store, tmp_path, monkeypatch):
    home = model_store
    name = register(home, tmp_path, "mem-sft", chat_records(24, seed=5))
    data = sft_spec(name, max_steps=3, packing=False, lora={"dropout": 0.0}, eval={"fraction": 0})
    assert run_job(data, job_id="mem-sft-whole", home=home, echo=False) == 0
    whole = step_losses(JobFolder("mem-sft-whole", home))
    _fake_model(monkeypatch, 100.0, 100.0, 1)  # one row a micro-batch: batch 4 in 4 micro-batches
    from felix_train.trainers.sft import _SFTTrainer

    seen = _record_micro_batches(monkeypatch, _SFTTrainer)
    job = JobFolder("mem-sft-split", home)
    assert run_job(data, job_id=job.id, home=home, echo=False) == 0, job.read_status().get("error")
    assert "memory: 4 micro-batches of 1 per batch of 4;" in job.log_path.read_text()
    assert seen == [1] * 12
    split = step_losses(job)
    assert sorted(split) == sorted(whole) == [1, 2, 3]
    for step in whole:
        assert split[step] == pytest.approx(whole[step], rel=1e-4, abs=1e-6), step


def test_a_job_whose_longest_example_cannot_fit_fails_before_training(model_store, tmp_path, monkeypatch):
    home = model_store
    name = register(home, tmp_path, "mem-none", preference_records(8, seed=4))
    _fake_model(monkeypatch, 100.0, 100.0, 1)  # two rows (one pair) never fit in one row's budget
    job = JobFolder("mem-none", home)
    code = run_job(dpo_spec(name, max_steps=2, eval={"fraction": 0}), job_id=job.id, home=home, echo=False)
    status = job.read_status()
    assert code == 3 and status["status"] == "failed"
    assert "even alone in its micro-batch with activation checkpointing" in status["error"]["message"]
    assert '"loss"' not in (job.metrics_path.read_text() if job.metrics_path.exists() else "")
    assert "memory" in job.log_path.read_text()
