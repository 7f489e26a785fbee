"""precision: the resolution table."""

from __future__ import annotations

import pytest

from felix_train.perf.precision import Precision, resolve_precision


def cpu(*flags):
    names = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
    return {"type": "cpu", "cpu": {"flags": {n: n in flags for n in names}}}


def gpu(major, minor):
    return {"type": "cuda", "cuda": {"name": "x", "capability": [major, minor]}}


FAST_BF16 = {"fp32": 300e9, "bf16": 1270e9}
SLOW_BF16 = {"fp32": 300e9, "bf16": 20e9}


@pytest.mark.parametrize("requested, info, measured, expected", [
    ("auto", gpu(9, 0), None, "bf16"),         # H100
    ("auto", gpu(8, 0), None, "bf16"),         # A100
    ("auto", gpu(8, 9), None, "bf16"),         # L4
    ("auto", gpu(7, 5), None, "fp32"),         # T4: bf16 emulated
    ("auto", gpu(7, 0), None, "fp32"),         # V100
    ("auto", cpu("avx2"), FAST_BF16, "fp32"),  # no AMX: never bf16, whatever was measured
    ("auto", cpu("avx2", "avx512f", "avx512_bf16"), FAST_BF16, "fp32"),
    ("auto", cpu("avx2", "avx512f", "amx_bf16", "amx_tile"), FAST_BF16, "bf16"),
    ("auto", cpu("avx2", "avx512f", "amx_bf16", "amx_tile"), SLOW_BF16, "fp32"),
    ("auto", cpu("avx2", "avx512f", "amx_bf16", "amx_tile"), None, "fp32"),  # AMX but not measured
    ("auto", {"type": "mps"}, None, "fp32"),
    ("fp32", gpu(9, 0), None, "fp32"),
    ("bf16", cpu("avx2"), None, "bf16"),       # an explicit request is honoured
    ("fp16", gpu(7, 0), None, "fp16"),
    (Precision.BF16, gpu(9, 0), None, "bf16"),
])
def test_resolution_table(requested, info, measured, expected):
    got = resolve_precision(requested, info, measured)
    assert got.precision is Precision(expected)
    assert got.value == expected and got.reason


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", cpu("avx2"))


def test_unknown_value_lists_the_valid_ones():
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16.*'int8'"):
        resolve_precision("int8", cpu("avx2"))


def test_reason_says_why_no_amx():
    assert "no AMX" in resolve_precision("auto", cpu("avx2")).reason
