"""ParallelConfig, its Hydra configs, and single-process init."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from magihuman.model import DiT
from magihuman.model.presets import TINY
from magihuman.parallel import ParallelConfig, init_distributed, parallelize

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "parallel"
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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


def test_a_submitit_slurm_task_joins_like_a_torchrun_rank(monkeypatch):
    """Task 11 of a 2-node x 8-task job (Hydra's submitit launcher) gets torchrun's variables from SLURM's."""
    from magihuman.parallel.launch import _torchrun_env_from_submitit

    for key in TORCHRUN_VARS:  # absent now, and absent again after the test (export writes os.environ)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    slurm = dict(SLURM_JOB_ID="4242", SLURM_NTASKS="16", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1",
                 SLURM_JOB_NODELIST="gpu[07-08]", SLURM_PROCID="11", SLURM_LOCALID="3")  # fmt: skip
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    _torchrun_env_from_submitit()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("11", "16", "3")
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0


def test_launch_rank_is_known_before_any_group(monkeypatch):
    """The sweep asks it to let only rank 0 claim and record a multi-rank point."""
    from magihuman.parallel import launch_rank

    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert launch_rank(ParallelConfig()) == 0  # one process: rank 0 whatever the environment
    assert launch_rank(ParallelConfig(cp_size=2, cfg_parallel=True)) == 3
