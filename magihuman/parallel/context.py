"""Ulysses context parallelism: the packed sequence split over ranks, heads exchanged for attention.

Each of the P ranks of a group holds one contiguous shard of the packed sequence and runs
every token-wise part of the DiT (adapter, norms, linears, MLP, rotary, heads) on it alone.
Only attention needs the whole sequence: an all-to-all turns q, k, v from (own shard, all
heads) into (full sequence, heads/P); the ordinary :class:`AttentionKernel` runs on that, so
local-attention spans and multi-sample batches work unchanged; a second all-to-all returns
(own shard, all heads). The per-token outputs are all-gathered at the end.

Any P that divides the query heads works. When P does not divide the KV heads (GQA with
fewer KV groups than ranks, e.g. one group), each KV head is repeated before the exchange
so that every rank receives whole copies of the KV heads its query heads read (see
:func:`kv_replicas`); that costs only KV traffic, the query heads are never duplicated.

Padding: a sequence of L tokens is padded to Lp, the next multiple of P, with zero tokens of
modality TEXT (no output head). Padding is excluded from attention by slicing the gathered
q, k, v to their first L rows before the kernel (its spans only name real tokens) and
handing zeros back for the padded rows; it is cut from the output by keeping rows ``[:L]``.
Every other op is token-wise, so padded rows never touch real ones.

Inference only: the collectives are not differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from ..model.dit import AttentionKernel, DiT, ForwardOptions
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


def kv_replicas(num_heads: int, num_kv_heads: int, world_size: int) -> int:
    """Copies of each KV head that Ulysses over ``world_size`` ranks exchanges.

    Rank p attends with query heads ``[p H/P, (p+1) H/P)``, so P must divide the H query
    heads. With G = H / kv query heads per KV head, repeating each KV head r = P / gcd(P, kv)
    times gives r*kv heads, a multiple of P, and r divides G (P divides G*kv), so rank p
    receives ``r*kv / P`` whole heads and query head i reads copy ``i // (G / r)``, which is
    KV head ``i // G`` as in one process. r = 1 when P divides the KV heads.
    """
    if world_size < 1 or num_heads % world_size:
        divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ValueError(
            f"context parallel size {world_size} must divide the {num_heads} query heads; use one of {divisors}"
        )
    return world_size // math.gcd(world_size, num_kv_heads)


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

    def __init__(self, kernel: AttentionKernel, shard: SequenceShard, group: ProcessGroup | None, kv_copies: int = 1):
        self.kernel, self.shard, self.group, self.kv_copies = kernel, shard, group, kv_copies

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, local: bool) -> Tensor:
        length, pad = self.shard.length, self.shard.padded_length - self.shard.length
        if self.kv_copies > 1:  # copies of one KV head are adjacent: head j' is a copy of j' // r
            k, v = k.repeat_interleave(self.kv_copies, dim=1), v.repeat_interleave(self.kv_copies, dim=1)
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
        config = model.config
        self.kv_copies = kv_replicas(config.num_heads, config.num_query_groups, dist.get_world_size(group))

    def forward(self, packed: Packed, options: ForwardOptions = ForwardOptions()) -> Tensor:
        """``options`` as for :meth:`DiT.layout`: the attention kernel's backend and dtype, MLP chunking."""
        shard = SequenceShard.of(packed.x.shape[0], dist.get_rank(self.group), dist.get_world_size(self.group))
        kernel = AttentionKernel(packed, options.attn_backend, options.attention_dtype(packed.x.device))
        attention = UlyssesAttention(kernel, shard, self.group, self.kv_copies)
        out = self.model.forward_tokens(*shard_tokens(packed, shard), attention, options)
        return all_gather_rows(out, self.group)[: shard.length]
