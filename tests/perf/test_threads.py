"""threads: the environment policy (user values respected) and torch's pool."""

from __future__ import annotations

import pytest

from felix_train.perf.threads import apply_thread_policy, policy_summary, threads_per_job, torch_threads


def test_policy_sets_passive_and_threads_per_job():
    env: dict[str, str] = {}
    got = apply_thread_policy(2, env, cpus=8)
    assert got == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert env == got


def test_policy_respects_user_values():
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}
    got = apply_thread_policy(1, env, cpus=8)
    assert got == {"MKL_NUM_THREADS": "3"}  # the user's count sizes both pools
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    env = {"OMP_WAIT_POLICY": "", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert apply_thread_policy(1, env, cpus=8) == {}  # an empty value is the user's too


def test_threads_per_job_at_least_one():
    assert threads_per_job(1, cpus=2) == 2
    assert threads_per_job(3, cpus=2) == 1
    assert threads_per_job(2, cpus=7) == 3
    with pytest.raises(ValueError, match="concurrent_jobs"):
        threads_per_job(0, cpus=2)


def test_torch_threads_follows_env_then_policy():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert torch_threads(1, {"OMP_NUM_THREADS": "2"}) == 2
        assert torch_threads(4, {}, cpus=4) == 1
        assert torch_threads(1, {"OMP_NUM_THREADS": "bogus"}, cpus=2) == 2
    finally:
        torch.set_num_threads(before)


def test_policy_summary_names_the_values():
    line = policy_summary({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"})
    assert "OMP_WAIT_POLICY=PASSIVE" in line and "OMP_NUM_THREADS=2" in line and "MKL_NUM_THREADS=unset" in line
