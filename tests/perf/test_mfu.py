"""mfu: the throughput math, per step and over a run."""

from __future__ import annotations

import pytest

from felix_train.perf.mfu import Throughput, throughput_metrics


def test_throughput_metrics_math():
    # 1000 tokens in 2 s at 1 GFLOP/token = 500 GFLOP/s = 0.5 TFLOP/s; peak 2 TFLOP/s -> MFU 0.25
    m = throughput_metrics(1000, 2.0, 1e9, 2e12)
    assert m == {"tokens_per_s": 500.0, "achieved_tflops": 0.5, "mfu": 0.25}


def test_unknown_inputs_give_none():
    assert throughput_metrics(100, 1.0) == {"tokens_per_s": 100.0, "achieved_tflops": None, "mfu": None}
    assert throughput_metrics(100, 1.0, 1e9) == {"tokens_per_s": 100.0, "achieved_tflops": 0.1, "mfu": None}
    assert throughput_metrics(100, 0.0, 1e9, 1e12) == {"tokens_per_s": None, "achieved_tflops": None, "mfu": None}
    assert throughput_metrics(8, 4.0, unit="samples") == {"samples_per_s": 2.0, "achieved_tflops": None, "mfu": None}


def test_tracker_skips_warmup_in_summary():
    t = Throughput(flops_per_unit=1e9, peak_flops=1e12, warmup_steps=1)
    first = t.step(100, 10.0)  # slow first step (kernel selection)
    assert first["tokens_per_s"] == 10.0
    t.step(300, 1.0)
    t.step(100, 1.0)
    s = t.summary()
    assert s["tokens_per_s"] == 200.0
    assert s["achieved_tflops"] == pytest.approx(0.2)
    assert s["mfu"] == pytest.approx(0.2)


def test_tracker_summary_falls_back_to_all_steps():
    t = Throughput(warmup_steps=5)
    t.step(50, 1.0)
    assert t.summary()["tokens_per_s"] == 50.0
    assert Throughput().summary() == {"tokens_per_s": None, "achieved_tflops": None, "mfu": None}
