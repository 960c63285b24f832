"""Ulysses context parallelism: the packed sequence split over ranks, heads exchanged for attention.

Each of the P ranks of a group holds one contiguous shard of the packed sequence and runs
every token-wise part of the DiT (adapter, norms, linears, MLP, rotary, heads) on it alone.
Only attention needs the whole sequence: an all-to-all turns q, k, v from (own shard, all
heads) into (full sequence, heads/P); the ordinary :class:`AttentionKernel` runs on that, so
local-attention spans and multi-sample batches work unchanged; a second all-to-all returns
(own shard, all heads). The per-token outputs are all-gathered at the end.

Padding: a sequence of L tokens is padded to Lp, the next multiple of P, with zero tokens of
modality TEXT (no output head). Padding is excluded from attention by slicing the gathered
q, k, v to their first L rows before the kernel (its spans only name real tokens) and
handing zeros back for the padded rows; it is cut from the output by keeping rows ``[:L]``.
Every other op is token-wise, so padded rows never touch real ones.

Inference only: the collectives are not differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from ..model.dit import AttentionKernel, DiT
from ..model.packing import Modality, Packed


@dataclass(frozen=True)
class SequenceShard:
    """One rank's contiguous slice ``[start, end)`` of the sequence padded to ``padded_length``."""

    start: int
    end: int
    length: int  # real tokens in the whole sequence
    padded_length: int

    @classmethod
    def of(cls, length: int, rank: int, world_size: int) -> SequenceShard:
        padded = -(-length // world_size) * world_size
        size = padded // world_size
        return cls(rank * size, (rank + 1) * size, length, padded)


def check_heads(num_heads: int, num_kv_heads: int, world_size: int) -> None:
    """Ulysses gives each rank heads/P query heads and kv_heads/P key/value heads."""
    if num_kv_heads % world_size or num_heads % world_size:
        raise ValueError(
            f"context parallel size {world_size} must divide the {num_kv_heads} KV heads "
            f"(num_query_groups) and the {num_heads} query heads; use a context parallel size "
            f"that divides {num_kv_heads}"
        )


def shard_tokens(packed: Packed, shard: SequenceShard) -> tuple[Tensor, Tensor, Tensor]:
    """(x, coords, modality) of one shard, the padding being zero TEXT tokens."""
    pad = shard.padded_length - shard.length
    x = F.pad(packed.x, (0, 0, 0, pad))
    coords = F.pad(packed.coords, (0, 0, 0, pad))
    modality = F.pad(packed.modality, (0, pad), value=int(Modality.TEXT))
    return x[shard.start : shard.end], coords[shard.start : shard.end], modality[shard.start : shard.end]


def seq_to_heads(t: Tensor, group: ProcessGroup | None) -> Tensor:
    """``[Lp/P, H, D]`` (own shard, all heads) -> ``[Lp, H/P, D]`` (full sequence, own heads)."""
    world = dist.get_world_size(group)
    n, h, d = t.shape
    send = t.reshape(n, world, h // world, d).transpose(0, 1).contiguous()  # [P, n, H/P, D] by destination
    recv = torch.empty_like(send)  # [P, n, H/P, D] by source rank = by sequence shard
    dist.all_to_all_single(recv, send, group=group)
    return recv.reshape(world * n, h // world, d)


def heads_to_seq(t: Tensor, group: ProcessGroup | None) -> Tensor:
    """``[Lp, H/P, D]`` (full sequence, own heads) -> ``[Lp/P, H, D]`` (own shard, all heads)."""
    world = dist.get_world_size(group)
    length, h, d = t.shape
    send = t.reshape(world, length // world, h, d).contiguous()  # by destination = by sequence shard
    recv = torch.empty_like(send)  # [P, n, H/P, D] by source rank = by head block
    dist.all_to_all_single(recv, send, group=group)
    return recv.transpose(0, 1).reshape(length // world, world * h, d)


class UlyssesAttention:
    """The ``attention(q, k, v, local)`` hook of :meth:`DiT.forward_tokens` for one rank's shard.

    q, k, v travel in the kernel's dtype, which the kernel casts to anyway, and the kernel's
    output comes back in that dtype too (it is computed there), so the exchange is exact.
    """

    def __init__(self, kernel: AttentionKernel, shard: SequenceShard, group: ProcessGroup | None):
        self.kernel, self.shard, self.group = kernel, shard, group

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, local: bool) -> Tensor:
        length, pad = self.shard.length, self.shard.padded_length - self.shard.length
        q, k, v = (seq_to_heads(t.to(self.kernel.dtype), self.group)[:length] for t in (q, k, v))
        out = self.kernel(q, k, v, local).to(self.kernel.dtype)
        out = F.pad(out, (0, 0, 0, 0, 0, pad))  # padded queries attend to nothing: zeros
        return heads_to_seq(out, self.group).float()


def all_gather_rows(t: Tensor, group: ProcessGroup | None) -> Tensor:
    """Concatenate every rank's equal-sized ``[n, ...]`` block along dim 0, on all ranks."""
    out = t.new_empty(t.shape[0] * dist.get_world_size(group), *t.shape[1:])
    dist.all_gather_single(out, t.contiguous(), group=group)
    return out


class ContextParallelDiT(nn.Module):
    """A :class:`DiT` whose sequence is split over the ranks of ``group``; ``forward`` matches ``DiT.forward``.

    Every rank of the group must call ``forward`` with the same ``packed``; every rank gets
    the full ``[L, C]`` output. ``model`` may be replicated or FSDP-sharded (see
    :func:`magihuman.parallel.fsdp.shard_dit`).
    """

    def __init__(self, model: DiT, group: ProcessGroup | None = None):
        super().__init__()
        self.model, self.group = model, group
        check_heads(model.config.num_heads, model.config.num_query_groups, dist.get_world_size(group))

    def forward(self, packed: Packed) -> Tensor:
        shard = SequenceShard.of(packed.x.shape[0], dist.get_rank(self.group), dist.get_world_size(self.group))
        kernel = AttentionKernel(packed, self.model.attn_backend, self.model.attention_dtype(packed.x.device))
        out = self.model.forward_tokens(*shard_tokens(packed, shard), UlyssesAttention(kernel, shard, self.group))
        return all_gather_rows(out, self.group)[: shard.length]
