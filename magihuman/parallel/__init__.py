"""Multi-GPU inference on torch.distributed: context parallel (Ulysses), CFG parallel, FSDP2."""

from .cfg import cfg_parallel_velocity
from .context import ContextParallelDiT
from .fsdp import load_sharded, local_parameter_bytes, shard_dit
from .launch import ParallelConfig, ParallelState, init_distributed, launch_rank, parallel_velocity, parallelize

__all__ = [
    "ContextParallelDiT",
    "ParallelConfig",
    "ParallelState",
    "cfg_parallel_velocity",
    "init_distributed",
    "launch_rank",
    "load_sharded",
    "local_parameter_bytes",
    "parallel_velocity",
    "parallelize",
    "shard_dit",
]
