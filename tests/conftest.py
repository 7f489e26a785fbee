"""Shared test fixtures: an isolated $FELIX_HOME per test, one CPU thread, the shared data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def felix_home(tmp_path, monkeypatch) -> Path:
    """A fresh $FELIX_HOME for the test."""
    home = tmp_path / "felix"
    home.mkdir()
    monkeypatch.setenv("FELIX_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """A $FELIX_HOME shared by the whole session so tiny base models are built once.

    Tests that train use it as their home (jobs get unique ids), keeping built models.
    """
    return tmp_path_factory.mktemp("felix-shared")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (they live beside the repo as ../shared/data)")
    return SHARED_DATA


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # validation-only environments
        pass
