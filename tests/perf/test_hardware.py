"""hardware: CPU flags from a fake /proc/cpuinfo, cgroup quota parsing from fake files, usable CPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from felix_train.perf import hardware
from felix_train.perf.hardware import cgroup_cpu_quota, cpu_features, cpu_flags, cpu_model, device_key, usable_cpus

CPUINFO_SPR = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_flags_and_model_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO_SPR)
    flags = cpu_flags(path)
    assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= flags
    assert cpu_features(flags) == {"amx_bf16": True, "amx_tile": True, "avx512_bf16": True,
                                   "avx512f": True, "avx2": True}
    assert cpu_features(frozenset({"avx2", "fma"})) == {"amx_bf16": False, "amx_tile": False,
                                                        "avx512_bf16": False, "avx512f": False, "avx2": True}
    assert cpu_model(path) == "Intel(R) Xeon(R) Platinum 8480+"


def test_missing_cpuinfo_gives_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "absent") == frozenset()


def _v2(tmp_path, cpu_max: dict[str, str], cgroup_line: str = "0::/"):
    root = tmp_path / "cgroup"
    for rel, text in cpu_max.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(cgroup_line + "\n")
    return root, proc


@pytest.mark.parametrize("text, quota", [("max 100000\n", None), ("150000 100000\n", 1.5),
                                         ("50000 100000", 0.5), ("400000 100000", 4.0), ("garbage", None)])
def test_cgroup_v2_cpu_max(tmp_path, text, quota):
    root, proc = _v2(tmp_path, {"": text})
    assert cgroup_cpu_quota(root, proc) == quota


def test_cgroup_v2_smallest_limit_on_the_path_wins(tmp_path):
    root, proc = _v2(tmp_path, {"": "max 100000", "kubepods/pod1": "300000 100000",
                                "kubepods/pod1/ctr": "max 100000"}, "0::/kubepods/pod1/ctr")
    assert cgroup_cpu_quota(root, proc) == 3.0


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cgroup"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("250000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(root, tmp_path / "absent") == 2.5
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(root, tmp_path / "absent") is None


def test_usable_cpus_is_the_smaller_of_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "affinity_cpus", lambda: 8)
    root, proc = _v2(tmp_path, {"": "150000 100000"})
    assert usable_cpus(root=root, proc_cgroup=proc) == 2  # 1.5 CPUs rounds up
    root, proc = _v2(tmp_path / "b", {"": "1600000 100000"})
    assert usable_cpus(root=root, proc_cgroup=proc) == 8
    root, proc = _v2(tmp_path / "c", {"": "10000 100000"})
    assert usable_cpus(root=root, proc_cgroup=proc) == 1
    assert usable_cpus(root=tmp_path / "none", proc_cgroup=tmp_path / "none") == 8


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_affinity_mask_is_respected():
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from felix_train.perf.hardware import affinity_cpus; print(affinity_cpus())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_perf_imports_and_describe_device_cpu_do_not_load_torch():
    code = ("import sys, json; import felix_train.perf, felix_train.perf.bench_threads; "
            "from felix_train.perf.hardware import describe_device; "
            "d = describe_device(); print(json.dumps([d['type'], 'torch' in sys.modules, d['cpu']['usable_cpus']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kind, torch_loaded, cpus = __import__("json").loads(out.stdout)
    assert kind == "cpu" and torch_loaded is False and cpus >= 1


def test_device_key():
    cpu = {"type": "cpu", "cpu": {"model": "AMD EPYC 7763 64-Core Processor", "usable_cpus": 4}}
    assert device_key(cpu) == "cpu-amd-epyc-7763-64-core-processor-4t"
    assert device_key(cpu, threads=2) == "cpu-amd-epyc-7763-64-core-processor-2t"
    gpu = {"type": "cuda", "cuda": {"name": "NVIDIA H100 80GB HBM3"}}
    assert device_key(gpu) == "cuda-nvidia-h100-80gb-hbm3"
