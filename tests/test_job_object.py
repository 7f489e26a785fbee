"""status.json's job-object fields (issue 20): `estimated_finish`, `trained_tokens`, `hyperparameters`."""

from __future__ import annotations

from datetime import datetime, timezone

from felix_train.jobs import JobFolder, JobState, Progress
from felix_train.reporting import Reporter
from felix_train.spec import validate_spec


def test_estimated_finish_and_trained_tokens_follow_progress_then_the_final_metrics(tmp_path):
    job = JobFolder("job-object", tmp_path)
    job.create()
    reporter = Reporter(job, echo=False)
    reporter.update_status(id=job.id, status="running")
    reporter.start_clock(0)
    reporter._t0 -= 10  # ten seconds for the first step: 90 s left for nine more
    reporter.progress(1, 10, 0.1, force=True, trained_tokens=8, samples_per_s=0.8)
    state = job.read_state()
    assert state.progress.trained_tokens == 8 and state.trained_tokens == 8
    eta = datetime.fromisoformat(state.estimated_finish) - datetime.now(timezone.utc)
    assert 80 <= eta.total_seconds() <= 91 and state.progress.estimated_finish == state.estimated_finish
    assert job.read_status()["progress"]["samples_per_s"] == 0.8

    done = reporter.update_status(status="complete", metrics={"trained_tokens": 80})
    assert done.estimated_finish is None and done.trained_tokens == 80
    assert job.read_status()["estimated_finish"] is None and job.read_status()["trained_tokens"] == 80


def test_a_requeued_job_drops_its_run_s_estimate_but_keeps_a_known_one():
    progress = Progress(step=3, estimated_finish="2030-01-01T00:00:00+00:00")
    left_over = JobState(id="j", status="requested", progress=progress, estimated_finish=progress.estimated_finish)
    assert left_over.estimated_finish is None
    estimated = JobState(id="j", status="requested", progress=Progress(), estimated_finish="2030-02-01T00:00:00+00:00")
    assert estimated.estimated_finish == "2030-02-01T00:00:00+00:00"
    assert JobState(id="j", status="failed", estimated_finish="2030-02-01T00:00:00+00:00").estimated_finish is None


def test_hyperparameters_are_resolved_with_defaults_filled():
    lora = validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}]}, check_datasets=False)
    hp = lora.hyperparameters()
    entry = lora.entry()
    assert hp["num_epochs"] == entry.default_num_epochs and hp["batch_size"] == entry.default_batch_size
    assert hp["learning_rate"] == entry.default_learning_rate[lora.training_type]
    assert hp["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": entry.lora_target_modules}
    assert hp["max_length"] == entry.default_max_length and hp["gradient_accumulation_steps"] == 1
    full = validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}], "training_type": "full"},
                         check_datasets=False)
    assert full.hyperparameters()["lora"] is None
    dpo = validate_spec({"base_model": "felix/tiny-llm", "datasets": [{"name": "x"}], "training_algorithm": "dpo",
                         "rl_config": {"beta": 0.2}}, check_datasets=False)
    rl = dpo.hyperparameters()["rl_config"]
    assert rl["beta"] == 0.2 and len(rl) > 1  # the TRL-aligned defaults filled in
