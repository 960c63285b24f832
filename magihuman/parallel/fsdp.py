"""FSDP2 weight sharding for inference: each rank stores 1/P of every parameter.

``fully_shard`` goes on each :class:`TransformerLayer`, then on the root (adapter, final
norms and heads). Before a layer runs its parameters are all-gathered, and freed again
after it, so a rank holds its shards plus about one full layer at a time (the root's few
parameters stay gathered after the first forward: FSDP2 keeps the root unsharded).

Runs on CUDA with NCCL and on CPU with gloo (torch 2.14; the tests use the latter).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

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
