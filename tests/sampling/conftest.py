"""Shared fixtures for the sampler tests: golden-data location and the toy linear velocity model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.golden import golden_dir


def _golden_file(name: str) -> Path:
    path = golden_dir() / name
    if not path.is_file():
        pytest.skip(f"golden file {path} not found (set MAGIHUMAN_GOLDEN_DIR)")
    return path


@pytest.fixture(scope="session")
def golden_schedules() -> dict:
    return json.loads(_golden_file("schedules.json").read_text())


@pytest.fixture(scope="session")
def golden_samplers() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(_golden_file("samplers.safetensors"))
