"""The distributed launch's package data: the bundled accelerate configs ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

from felix_train.launch import ACCELERATE_CONFIG_DIR, accelerate_config

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3", "multi-node")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_config_names_resolve_inside_the_package(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root: nothing may be found through `configs/`
    package = Path(str(files("felix_train"))).resolve()
    path = accelerate_config(name)
    assert path == ACCELERATE_CONFIG_DIR / f"{name}.yaml"
    assert path.is_file() and path.is_relative_to(package), (path, package)


def test_the_wheel_ships_the_accelerate_configs(tmp_path):
    """A non-editable `pip install .` gets the configs: the built wheel holds every bundled YAML."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "felix_train", src / "felix_train", ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("README.md", "LICENSE"):
        if (ROOT / extra).exists():
            shutil.copy(ROOT / extra, src)
    out = tmp_path / "wheel"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("felix_train-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"felix_train/configs/accelerate/{name}.yaml" for name in BUNDLED} <= names, sorted(names)
