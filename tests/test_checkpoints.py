"""Checkpoints: staging folders left by a run killed mid-write are removed by the next run."""

from __future__ import annotations

from felix_train.checkpoints import CheckpointManager, list_checkpoints
from felix_train.jobs import JobFolder


def _manager(job: JobFolder, **kw) -> CheckpointManager:
    return CheckpointManager(job, base_model="felix/tiny-gliner2", training_type="lora", family="gliner2", **kw)


def test_stale_staging_folders_are_removed_on_restart(felix_home):
    job = JobFolder("job-stale", felix_home)
    job.create()
    killed = _manager(job)  # a run killed while it wrote its second checkpoint
    first = killed.stage()
    (first / "weights.bin").write_bytes(b"\0" * 64)
    committed = killed.commit(first, step=1)
    left = killed.stage()
    (left / "weights.bin").write_bytes(b"\0" * 32)
    hf_left = job.work_dir / "hf" / "checkpoint-2"
    hf_left.mkdir(parents=True)
    keep = job.work_dir / "launch-spec.json"
    keep.write_text("{}")

    rerun = _manager(job)
    own = rerun.stage()  # never its own
    assert rerun.remove_stale_staging() == [left]
    assert not left.exists() and own.is_dir() and keep.exists() and hf_left.exists()
    assert [m.uuid for m in list_checkpoints(job)] == [committed.uuid]  # committed checkpoints untouched
    assert rerun.remove_stale_staging(("staging-*", "hf/checkpoint-*")) == [hf_left]
    assert rerun.remove_stale_staging() == []


def test_only_the_main_rank_removes_staging(felix_home):
    job = JobFolder("job-ranks", felix_home)
    job.create()
    left = _manager(job).stage()
    assert _manager(job, is_main=False).remove_stale_staging() == []
    assert left.is_dir()
    assert _manager(JobFolder("job-none", felix_home)).remove_stale_staging() == []  # no work/ yet
