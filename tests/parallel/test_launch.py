"""ParallelConfig, its Hydra configs, and single-process init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from magihuman.model import DiT
from magihuman.model.presets import TINY
from magihuman.parallel import ParallelConfig, init_distributed, parallelize

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "parallel"


@pytest.mark.parametrize(
    ("name", "world_size"), [("none", 1), ("cp2", 2), ("cfg2", 2)]
)
def test_configs_instantiate(name, world_size):
    config = instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert isinstance(config, ParallelConfig) and config.world_size == world_size


def test_world_size_is_cp_times_cfg():
    assert ParallelConfig(cp_size=4, cfg_parallel=True).world_size == 8
    with pytest.raises(ValueError, match="cp_size"):
        ParallelConfig(cp_size=0)


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    state = init_distributed(ParallelConfig())
    assert state.rank == 0 and state.cp_group is None and not torch.distributed.is_initialized()
    model = DiT(TINY)
    assert parallelize(model, state) is model


def test_launch_size_must_match_config(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="needs 2 ranks"):
        init_distributed(ParallelConfig(cp_size=2))
