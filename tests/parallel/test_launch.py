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
    ("name", "world_size", "label"),
    [("none", 1, "none"), ("cp2", 2, "cp2"), ("cfg2", 2, "cfg"), ("fsdp2", 2, "fsdp2"), ("cp2_fsdp", 2, "cp2+fsdp2")],
)
def test_configs_instantiate(name, world_size, label):
    config = instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert isinstance(config, ParallelConfig) and config.world_size == world_size and config.label == label


def test_every_parallel_config_is_tested():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == {"none", "cp2", "cfg2", "fsdp2", "cp2_fsdp"}


def test_world_size_is_replicas_times_cfg_times_cp():
    assert ParallelConfig(cp_size=4, cfg_parallel=True).world_size == 8
    assert ParallelConfig(cp_size=2, cfg_parallel=True, fsdp=True, replicas=2).world_size == 8
    assert ParallelConfig(cp_size=4, cfg_parallel=True, fsdp=True).label == "cp4+cfg+fsdp8"
    with pytest.raises(ValueError, match="cp_size"):
        ParallelConfig(cp_size=0)
    with pytest.raises(ValueError, match="replicas=2 without fsdp"):
        ParallelConfig(replicas=2)


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
