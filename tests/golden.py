"""Helpers for the golden-vector tests: where the directory is and how to read it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """``$MAGIHUMAN_GOLDEN_DIR`` (default ``../shared/golden``); relative paths are taken from the repo root."""
    path = Path(os.environ.get("MAGIHUMAN_GOLDEN_DIR", "../shared/golden"))
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def golden_files(pattern: str) -> list[Path]:
    return sorted(golden_dir().glob(pattern))


def read_golden(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config metadata, tensors) of one golden safetensors archive."""
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return meta, {k: f.get_tensor(k) for k in f.keys()}


def golden_params(pattern: str):
    """Parametrize over matching golden files; one skipped case when there are none."""
    files = golden_files(pattern)
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {pattern} in {golden_dir()}"))]
    return [pytest.param(f, id=f.stem) for f in files]


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()
