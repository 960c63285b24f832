"""FSDP2 weight sharding for inference: each rank stores 1/P of every parameter.

``fully_shard`` goes on each :class:`TransformerLayer`, then on the root (adapter, final
norms and heads). Before a layer runs its parameters are all-gathered, and freed again
after it, so a rank holds its shards plus about one full layer at a time (the root's few
parameters stay gathered after the first forward: FSDP2 keeps the root unsharded).

:func:`load_sharded` builds the model this way from a checkpoint without any rank ever
holding all of it: the DiT is built on the meta device, sharded, given storage for its own
shards only on the rank's device, and each rank reads just its rows of every tensor from
the safetensors files (their leading-dim slice, as FSDP2 shards dim 0).

Runs on CUDA with NCCL and on CPU with gloo (torch 2.14; the tests use the latter).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, Shard

from ..model.checkpoint import load_rows_into
from ..model.dit import DiT


def shard_dit(model: DiT, mesh: DeviceMesh | None = None) -> DiT:
    """Shard ``model`` in place over ``mesh`` (default: all ranks) and return it.

    Parameters are frozen first: the release mixes bf16 linears and fp32 norms inside a
    layer, which FSDP2 only accepts for parameters without gradients (it then all-gathers
    them as bytes). ``forward_tokens`` is registered as a forward method so that
    :class:`~magihuman.parallel.context.ContextParallelDiT`, which calls it directly, also
    gathers the root's parameters.
    """
    model.requires_grad_(False)
    for layer in model.block.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "forward_tokens")
    return model


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameter storage this rank holds: its shard of each DTensor, all of a plain tensor."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        total += local.numel() * local.element_size()
    return total


def load_sharded(
    factory: Callable[[], DiT], directory: str | os.PathLike, mesh: DeviceMesh, device: torch.device | str
) -> DiT:
    """``factory()``'s DiT, FSDP2-sharded over ``mesh`` on ``device``, each rank reading only its shard rows.

    Per rank, host and device hold this rank's shard of every parameter (1/P of the model)
    plus one tensor's slice in flight; nothing is materialized whole. Keys, shapes and
    dtypes are checked against the checkpoint before any read.
    """
    with torch.device("meta"):
        model = factory()
    shard_dit(model, mesh)
    model.to_empty(device=device)  # storage for the local shards (and the few unsharded buffers) only
    rank, world = mesh.get_local_rank(), mesh.size()

    def rows_of(key: str, tensor: Tensor) -> tuple[Tensor, int]:
        if not isinstance(tensor, DTensor):
            return tensor, 0
        if tuple(tensor.placements) != (Shard(0),):
            raise RuntimeError(f"{key}: expected an FSDP2 shard on dim 0, got placements {tensor.placements}")
        local, rows = tensor.to_local(), tensor.shape[0]
        per_rank = -(-rows // world)  # torch.chunk sizes, as FSDP2 splits dim 0
        start = min(rank * per_rank, rows)
        if local.shape[0] != min(per_rank, rows - start):
            raise RuntimeError(f"{key}: FSDP2 gave rank {rank} {local.shape[0]} of {rows} rows, expected chunk "
                               f"[{start}, {min(start + per_rank, rows)})")  # fmt: skip
        return local, start

    return load_rows_into(model, directory, rows_of).eval()


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)
