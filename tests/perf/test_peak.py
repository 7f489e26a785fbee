"""peak: the cache round-trip (probe monkeypatched to be instant), the published table, a real tiny probe."""

from __future__ import annotations

import json

import pytest

from felix_train.perf import peak
from felix_train.perf.peak import device_peak_flops, device_peaks, peak_cache_path, published_peak


@pytest.fixture
def fake_probe(monkeypatch):
    calls = []

    def probe(precision="fp32", device="cpu", **_):
        calls.append((precision, device))
        return {"fp32": 300e9, "bf16": 20e9, "fp16": 10e9}[precision] * (1 + len(calls) / 1000)

    monkeypatch.setattr(peak, "probe_matmul_flops", probe)
    return calls


def test_cache_round_trip(felix_home, fake_probe):
    first = device_peak_flops("fp32", "cpu")
    assert fake_probe == [("fp32", "cpu")]
    assert device_peak_flops("fp32", "cpu") == first  # from the cache, no second probe
    assert len(fake_probe) == 1
    peaks = device_peaks(("fp32", "bf16"), "cpu")
    assert peaks["fp32"] == first and peaks["bf16"] == pytest.approx(20e9, rel=0.01)
    assert [p for p, _ in fake_probe] == ["fp32", "bf16"]

    files = list((felix_home / "perf").glob("peak-cpu-*-*t.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert set(record["flops"]) == {"fp32", "bf16"}
    assert record["source"] == {"fp32": "probe", "bf16": "probe"}
    assert record["device"]["type"] == "cpu" and record["key"] == files[0].stem.removeprefix("peak-")
    assert not list((felix_home / "perf").glob(".*.tmp"))  # atomic write left no temp file

    again = device_peak_flops("fp32", "cpu", refresh=True)
    assert again != first and len(fake_probe) == 3
    assert json.loads(files[0].read_text())["flops"]["fp32"] == again


def test_thread_count_is_part_of_the_key(felix_home, fake_probe, monkeypatch):
    for threads in (1, 3, 1):
        monkeypatch.setattr(peak, "_current_threads", lambda: threads)
        device_peak_flops("fp32", "cpu")
    assert len(fake_probe) == 2
    assert sorted(p.name.rsplit("-", 1)[1] for p in (felix_home / "perf").glob("peak-*.json")) == ["1t.json", "3t.json"]


def test_threads_without_torch_come_from_the_env(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert peak._current_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    assert peak._current_threads() is None


def test_tf32_on_cpu_is_fp32(felix_home, fake_probe):
    assert device_peak_flops("tf32", "cpu") == device_peak_flops("fp32", "cpu")
    assert fake_probe == [("fp32", "cpu")]


def test_unknown_precision(felix_home):
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, fp16, got 'int4'"):
        device_peak_flops("int4", "cpu")


@pytest.mark.parametrize("name, bf16", [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10", 125e12), ("NVIDIA L4", 121e12), ("Tesla T4", None),
])
def test_published_table(name, bf16):
    assert published_peak(name, "bf16") == bf16


def test_cuda_without_probe_uses_the_table(felix_home, fake_probe, monkeypatch):
    info = {"type": "cuda", "cpu": {}, "cuda": {"name": "NVIDIA A100-SXM4-40GB", "capability": [8, 0]}}
    monkeypatch.setattr(peak, "describe_device", lambda device, load_torch=False: info)
    assert device_peak_flops("bf16", "cuda", probe=False) == 312e12
    assert device_peak_flops("fp32", "cuda", probe=False) == 19.5e12
    assert fake_probe == []
    record = json.loads(peak_cache_path("cuda-nvidia-a100-sxm4-40gb").read_text())
    assert record["source"] == {"bf16": "published", "fp32": "published"}
    info["cuda"]["name"] = "Tesla T4"
    assert device_peak_flops("bf16", "cuda", probe=False) is None


def test_real_probe_is_positive():
    pytest.importorskip("torch")
    assert peak.probe_matmul_flops("fp32", "cpu", sizes=(32, 64), budget_s=0.05) > 0


def test_the_probe_leaves_the_jobs_random_stream_alone():
    """The probe runs inside the first job on a device, after its seed: it must not draw from the global RNG
    (it did, and the first tiny-LLM job of a fresh $FELIX_HOME ended at another loss than every rerun)."""
    import torch

    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    peak.probe_matmul_flops("fp32", sizes=(32,), budget_s=0.05, max_repeats=1)
    assert torch.equal(torch.rand(4), expected)
