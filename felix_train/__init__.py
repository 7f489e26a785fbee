"""felix_train: the fine-tuning engine behind the Felix training-jobs API.

`felix_train.run_job(spec)` runs one job to its end and returns its exit code.
Importing this package is light: torch and the trainer libraries load only when a
trainer runs. `run_job` and the CLI (`felix_train.cli.main`) apply the CPU thread policy
(`felix_train.perf.threads`) before torch loads.
"""

__version__ = "0.1.0"


def run_job(spec, *, job_id=None, home=None, echo=True) -> int:
    """Run one job (a spec path, dict or JobSpec); see `felix_train.runner.run_job`.

    The CPU thread policy (`felix_train.perf.threads.apply_process_policy`) is applied first: it takes full
    effect when torch is not imported yet; otherwise the trainer still sizes torch's pool.
    """
    from felix_train.perf.threads import apply_process_policy

    apply_process_policy()
    from felix_train.runner import run_job as _run_job

    return _run_job(spec, job_id=job_id, home=home, echo=echo)


__all__ = ["run_job", "__version__"]
