"""Process groups from a torchrun launch, and applying a :class:`ParallelConfig` to a DiT.

Ranks form a ``(replica, cfg, cp)`` grid: the ``cp`` ranks of a row split one sequence
(context parallel), the two rows run the cond and uncond passes (CFG parallel). FSDP, when
on, shards the DiT weights over all ranks; ``replicas`` repeats the grid so that FSDP has
more ranks to shard over (they run the same generation: FSDP alone buys memory, not
speed). Launch with e.g. ``torchrun --nproc-per-node 4 ...`` for ``cp_size=2,
cfg_parallel=true``; ``configs/parallel/`` holds the named setups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from ..model.dit import DiT
from ..sampling.guidance import Velocity
from .cfg import BindTexts, cfg_parallel_velocity
from .context import ContextParallelDiT
from .fsdp import is_sharded, shard_dit


@dataclass(frozen=True)
class ParallelConfig:
    """How one generation is spread over ranks; the launch must have ``world_size`` of them."""

    cp_size: int = 1  # ranks splitting the token sequence (must divide the query heads)
    cfg_parallel: bool = False  # cond and uncond passes on different ranks
    fsdp: bool = False  # shard the DiT weights over all ranks; each reads only its shard of the checkpoint
    replicas: int = 1  # copies of the (cfg, cp) grid running the same generation: more ranks for FSDP

    def __post_init__(self) -> None:
        if self.cp_size < 1 or self.replicas < 1:
            raise ValueError(f"cp_size and replicas must be >= 1, got {self.cp_size} and {self.replicas}")
        if self.replicas > 1 and not self.fsdp:
            raise ValueError(f"replicas={self.replicas} without fsdp would only repeat the same work; "
                             "replicas exist to shard the weights over more ranks (set fsdp: true)")  # fmt: skip

    @property
    def cfg_size(self) -> int:
        return 2 if self.cfg_parallel else 1

    @property
    def world_size(self) -> int:
        return self.replicas * self.cfg_size * self.cp_size

    @property
    def label(self) -> str:
        """Short name of the setup, e.g. ``cp2+cfg+fsdp4`` (``none`` for one process); the sweep records it."""
        parts = [f"cp{self.cp_size}"] if self.cp_size > 1 else []
        parts += ["cfg"] if self.cfg_parallel else []
        parts += [f"fsdp{self.world_size}"] if self.fsdp else []
        return "+".join(parts) or "none"


@dataclass(frozen=True)
class ParallelState:
    """This rank's place in the launch. Groups are ``None`` in a single-process run."""

    config: ParallelConfig
    rank: int
    device: torch.device
    cp_group: ProcessGroup | None = None
    cfg_group: ProcessGroup | None = None
    fsdp_mesh: DeviceMesh | None = None


def init_distributed(config: ParallelConfig, device_type: Literal["cuda", "cpu"] | None = None) -> ParallelState:
    """Join the torchrun job (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*`` from the env).

    ``device_type`` ``None`` means cuda when available: NCCL with one GPU per local rank;
    ``"cpu"`` uses gloo (the tests, or CPU debugging on a GPU box). A config of one rank
    without a torchrun env runs single-process with no groups. In a task of a submitit job
    (Hydra's submitit launcher, one task per GPU over any number of nodes) the same
    variables are first derived from the job, as submitit documents.
    """
    if config.world_size > 1:
        _torchrun_env_from_submitit()
    cuda = (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != config.world_size:
        raise ValueError(
            f"{config} needs {config.world_size} ranks (replicas x cfg {config.cfg_size} x cp_size), "
            f"but the launch has {world_size}"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size == 1 and not dist.is_initialized():
        return ParallelState(config, rank=0, device=device)
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=int(os.environ["RANK"]), world_size=world_size)
    grid = init_device_mesh(device.type, (config.replicas, config.cfg_size, config.cp_size),
                            mesh_dim_names=("replica", "cfg", "cp"))  # fmt: skip
    fsdp_mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("fsdp",)) if config.fsdp else None
    return ParallelState(
        config,
        rank=dist.get_rank(),
        device=device,
        cp_group=grid.get_group("cp"),
        cfg_group=grid.get_group("cfg"),
        fsdp_mesh=fsdp_mesh,
    )


def launch_rank(config: ParallelConfig) -> int:
    """This process's global rank in a launch of ``config`` (0 for one process), before any group exists."""
    if config.world_size == 1:
        return 0
    _torchrun_env_from_submitit()
    return int(os.environ.get("RANK", "0"))


def _torchrun_env_from_submitit() -> None:
    """Set torchrun's variables from the SLURM (or local) job in a submitit task that has none."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment  # the sweep extra; present where submitit ran us

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # device = LOCAL_RANK


def parallelize(model: DiT, state: ParallelState) -> nn.Module:
    """``model`` FSDP-sharded and/or wrapped for context parallelism, as the config asks.

    The result is called like ``DiT.forward(packed)``, e.g. inside ``dit_velocity``. A model
    that comes sharded already (:func:`~magihuman.parallel.fsdp.load_sharded`) stays as it is.
    """
    if state.config.fsdp and not is_sharded(model):
        model = shard_dit(model.to(state.device), state.fsdp_mesh)
    if state.config.cp_size > 1:
        return ContextParallelDiT(model, state.cp_group)
    return model


def parallel_velocity(bind: BindTexts, texts: list[Tensor], state: ParallelState) -> Velocity:
    """``bind(texts)``, with the texts' rows split over the CFG ranks when that is on.

    A single-pass stage (one text) has nothing to split: each CFG rank runs it whole.
    """
    if state.config.cfg_parallel and len(texts) > 1:
        return cfg_parallel_velocity(bind, texts, state.cfg_group)
    return bind(texts)
