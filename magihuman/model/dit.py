"""The daVinci-MagiHuman transformer, top to bottom.

A single-stream DiT over one packed sequence of video, audio and text tokens:
self-attention only, no timestep embedding (the model reads the noise level off the
latents). The first and last few layers are a modality-expert "sandwich": each of their
linears and norms holds three experts (video, audio, text) stored concatenated along the
output dim, and each token uses its modality's expert. The middle layers share one set
of weights across modalities.

Precision follows the released checkpoint: the transformer linears are stored and run
in bf16; norms, rotary embedding, adapter, output head and MLP activations run in fp32.
Parameter names are the real checkpoint keys (``block.layers.3.attention.linear_qkv.weight``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .packing import Modality, Packed, SampleLayout, attention_segments
from .rope import apply_rope, check_rope_coords, fourier_angles, rope_bands

NUM_MODALITIES = len(Modality)
ACT_LIMIT = 7.0  # clamp of the gelu7 / swiglu7 activations
ACT_ALPHA = 1.702  # sigmoid slope of the GELU approximation


@dataclass(frozen=True)
class DiTConfig:
    """Architecture hyper-parameters; field names match the golden files' ``arch`` block."""

    num_layers: int = 40
    hidden_size: int = 5120
    head_dim: int = 128
    num_query_groups: int = 8
    video_in_channels: int = 192
    audio_in_channels: int = 64
    text_in_channels: int = 3584
    mm_layers: tuple[int, ...] = (0, 1, 2, 3, 36, 37, 38, 39)
    gelu7_layers: tuple[int, ...] = (0, 1, 2, 3)
    local_attn_layers: tuple[int, ...] = ()
    post_norm_layers: tuple[int, ...] = ()
    enable_attn_gating: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if self.num_heads % self.num_query_groups:
            raise ValueError(f"{self.num_heads} query heads do not split into {self.num_query_groups} KV groups")
        for name in ("mm_layers", "gelu7_layers", "local_attn_layers", "post_norm_layers"):
            layers = tuple(getattr(self, name))
            object.__setattr__(self, name, layers)
            if any(not 0 <= i < self.num_layers for i in layers):
                raise ValueError(f"{name}={list(layers)} names layers outside 0..{self.num_layers - 1}")

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @classmethod
    def from_dict(cls, arch: dict) -> DiTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(arch) - known)
        if unknown:
            raise ValueError(f"unknown DiT config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**arch)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


# ---------------------------------------------------------------------------------------
# Routing tokens to modality experts.


class ModalityRouter:
    """Groups tokens by modality so each expert is one dense matmul over its own tokens.

    Token-wise work (norms, linears, MLP) runs in grouped order; attention runs in
    sequence order. A single packed sample (video, audio, text) is already grouped, so the
    permutation is skipped; a CFG batch (two samples back to back) is gathered/scattered.
    Counts are Python ints and the permutation a fixed index tensor, so a forward over a
    router has static shapes and never reads a device value.
    """

    def __init__(self, modality: Tensor):
        """From per-token modality ids (reads them on the host: a sync on a GPU). Prefer
        :meth:`from_samples`, which needs only the packed layout."""
        self.counts: list[int] = torch.bincount(modality, minlength=NUM_MODALITIES).tolist()
        if bool((modality[1:] >= modality[:-1]).all()):
            self.order = self.inverse = None
        else:
            self.order = torch.argsort(modality, stable=True)
            self.inverse = torch.argsort(self.order)

    @classmethod
    def from_samples(cls, samples: list[SampleLayout], device: torch.device | str) -> ModalityRouter:
        """The router of packed ``samples`` (each ``[video, audio, text]``), built on the host."""
        spans = [[(s.offset, s.num_video), (s.offset + s.num_video, s.num_audio),
                  (s.offset + s.num_video + s.num_audio, s.num_text)] for s in samples]  # fmt: skip
        router = cls.grouped([sum(sample[m][1] for sample in spans) for m in range(NUM_MODALITIES)])
        if len(samples) > 1:
            order = torch.cat([torch.arange(start, start + n) for m in range(NUM_MODALITIES) for start, n in
                               (sample[m] for sample in spans)])  # fmt: skip
            router.order, router.inverse = order.to(device), torch.argsort(order).to(device)
        return router

    def group(self, x: Tensor) -> Tensor:
        return x if self.order is None else x[self.order]

    def ungroup(self, x: Tensor) -> Tensor:
        return x if self.inverse is None else x[self.inverse]

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        return x.split(self.counts)

    @classmethod
    def grouped(cls, counts: list[int]) -> ModalityRouter:
        """A router over rows already grouped by modality, ``counts[m]`` rows of modality m."""
        router = cls.__new__(cls)
        router.counts, router.order, router.inverse = list(counts), None, None
        return router

    def window(self, start: int, end: int) -> ModalityRouter:
        """The router of grouped rows ``[start, end)``: each modality's count clipped to the window."""
        bounds = [0]
        for count in self.counts:
            bounds.append(bounds[-1] + count)
        return ModalityRouter.grouped([max(0, min(end, b) - max(start, a)) for a, b in zip(bounds[:-1], bounds[1:])])


class RMSNorm(nn.Module):
    """RMSNorm in fp32 with scale ``weight + 1``; one weight vector per expert."""

    def __init__(self, dim: int, num_experts: int = 1, eps: float = 1e-6):
        super().__init__()
        self.num_experts, self.eps = num_experts, eps
        self.weight = nn.Parameter(torch.zeros(dim * num_experts, dtype=torch.float32))

    def forward(self, x: Tensor, router: ModalityRouter | None = None) -> Tensor:
        t = x.float()
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.num_experts == 1:
            t = t * (self.weight + 1)
        else:
            experts = self.weight.chunk(self.num_experts)
            t = torch.cat([chunk * (w + 1) for chunk, w in zip(router.split(t), experts)])
        return t.to(x.dtype)


class ExpertLinear(nn.Module):
    """Bias-free linear with ``num_experts`` weight blocks stacked along the output dim.

    Computes in the weight's dtype (bf16 in the release) and returns ``out_dtype``.
    """

    def __init__(self, in_features: int, out_features: int, num_experts: int = 1, dtype=torch.bfloat16):
        super().__init__()
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(out_features * num_experts, in_features, dtype=dtype))

    def forward(self, x: Tensor, router: ModalityRouter, out_dtype: torch.dtype) -> Tensor:
        x = x.to(self.weight.dtype)
        if self.num_experts == 1:
            y = F.linear(x, self.weight)
        else:
            experts = self.weight.chunk(self.num_experts)
            y = torch.cat([F.linear(chunk, w) for chunk, w in zip(router.split(x), experts)])
        return y.to(out_dtype)


# ---------------------------------------------------------------------------------------
# Attention.


Spans = list[tuple[int, int, list[tuple[int, int]]]]  # (q_start, q_end, [(k_start, k_end), ...])
AttentionBackend = Literal["sdpa", "flex"]
ATTN_BACKENDS: tuple[AttentionBackend, ...] = ("sdpa", "flex")


@dataclass(frozen=True)
class ForwardOptions:
    """How a forward runs, never what it computes (exact, or equal up to kernel rounding).

    Passed to :meth:`DiT.layout` and carried by the :class:`TokenLayout`, so no switch lives on
    the module. ``attn_backend``: ``sdpa`` (one SDPA per attention span: flash / cuDNN
    kernels) or ``flex`` (one FlexAttention call over a block mask). ``attn_dtype``: the dtype
    attention runs in; ``None`` is bf16 on CUDA (flash / cuDNN kernels) and fp32 on CPU, where
    the reference computed its golden vectors. ``mlp_chunk_tokens``: every MLP runs over at most
    that many tokens at a time (bounded memory, exact); ``None``: all at once.
    """

    attn_backend: AttentionBackend = "sdpa"
    attn_dtype: torch.dtype | None = None
    mlp_chunk_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend={self.attn_backend!r}: expected one of {ATTN_BACKENDS}")
        if self.attn_dtype is not None and not (isinstance(self.attn_dtype, torch.dtype)
                                                and self.attn_dtype.is_floating_point):  # fmt: skip
            raise ValueError(f"attn_dtype={self.attn_dtype!r}: expected a floating torch.dtype or None")
        if self.mlp_chunk_tokens is not None and (isinstance(self.mlp_chunk_tokens, bool)
                                                  or not isinstance(self.mlp_chunk_tokens, int)
                                                  or self.mlp_chunk_tokens < 1):  # fmt: skip
            raise ValueError(f"mlp_chunk_tokens must be an integer >= 1 or None, got {self.mlp_chunk_tokens!r}")

    def attention_dtype(self, device: torch.device | str) -> torch.dtype:
        """``attn_dtype``, or the device's default when it is None."""
        return self.attn_dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)


def attention_spans(packed: Packed) -> tuple[Spans, Spans]:
    """(full, local) spans: which keys each query span sees.

    Full layers attend within each sample; local layers use per-frame windows. Spans keep
    the cost linear in the number of frames: no dense L x L mask is ever built.
    """
    full, local = [], []
    for s in packed.samples:
        full.append((s.offset, s.offset + s.length, [(s.offset, s.offset + s.length)]))
        for start, end, keys in attention_segments(s.local_q_ranges, s.local_k_ranges):
            local.append((s.offset + start, s.offset + end, [(s.offset + a, s.offset + b) for a, b in keys]))
    return full, local


def sdpa_over_spans(q: Tensor, k: Tensor, v: Tensor, spans: Spans, dtype: torch.dtype) -> Tensor:
    """One SDPA call per query span (flash / cuDNN kernels on GPU); keys gathered per span."""
    out = q.new_empty(q.shape, dtype=torch.float32)
    for start, end, keys in spans:
        ks = torch.cat([k[a:b] for a, b in keys]) if len(keys) > 1 else k[keys[0][0] : keys[0][1]]
        vs = torch.cat([v[a:b] for a, b in keys]) if len(keys) > 1 else v[keys[0][0] : keys[0][1]]
        o = F.scaled_dot_product_attention(
            *(t.transpose(0, 1).to(dtype) for t in (q[start:end], ks, vs)), enable_gqa=True
        )
        out[start:end] = o.transpose(0, 1)
    return out


def spans_block_mask(spans: Spans, length: int, device) -> BlockMask:
    """The same spans as a FlexAttention block mask (sparse blocks, no L x L tensor)."""
    max_keys = max(len(keys) for _, _, keys in spans)
    segment = torch.zeros(length, dtype=torch.long)
    bounds = torch.zeros(len(spans), max_keys, 2, dtype=torch.long)  # padding is the empty [0, 0)
    for i, (start, end, keys) in enumerate(spans):
        segment[start:end] = i
        bounds[i, : len(keys)] = torch.tensor(keys)
    segment = segment.to(device)
    ranges = [(bounds[:, j, 0].to(device), bounds[:, j, 1].to(device)) for j in range(max_keys)]

    def visible(batch, head, q, k):
        seg = segment[q]
        hit = (k >= ranges[0][0][seg]) & (k < ranges[0][1][seg])
        for lo, hi in ranges[1:]:
            hit = hit | ((k >= lo[seg]) & (k < hi[seg]))
        return hit

    return create_block_mask(visible, None, None, length, length, device=device)


@cache
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=False)


AttentionFn = Callable[[Tensor, Tensor, Tensor, bool], Tensor]  # (q, k, v, local) -> out


class AttentionKernel:
    """Attention for one forward pass, shared by all layers: ``kernel(q, k, v, local)``.

    q ``[L, Hq, D]``, k/v ``[L, Hkv, D]`` (GQA) in sequence order -> ``[L, Hq, D]`` fp32.
    ``sdpa`` runs one SDPA per span; ``flex`` one FlexAttention call over a block mask
    (compiled on CUDA; the eager reference on CPU, for tests).
    """

    def __init__(self, packed: Packed, backend: AttentionBackend, dtype: torch.dtype, kinds=(False, True)):
        """``kinds``: which of full (False) / local (True) attention the model uses; flex block
        masks for them are built here, once, so calls never build anything."""
        self.backend, self.dtype = backend, dtype
        self.spans = dict(zip((False, True), attention_spans(packed)))
        length, device = packed.x.shape[0], packed.x.device
        self._masks: dict[bool, BlockMask] = (
            {local: spans_block_mask(self.spans[local], length, device) for local in kinds} if backend == "flex" else {}
        )

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, local: bool) -> Tensor:
        if self.backend == "sdpa":
            return sdpa_over_spans(q, k, v, self.spans[local], self.dtype)
        # Eager flex is a slow reference; compile it on CUDA (inside a compiled model it is already compiled).
        flex = _compiled_flex_attention() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
        qkv = (t.transpose(0, 1).unsqueeze(0).to(self.dtype) for t in (q, k, v))
        return flex(*qkv, block_mask=self._masks[local], enable_gqa=True)[0].transpose(0, 1).float()


class Attention(nn.Module):
    """GQA self-attention with per-head q/k RMSNorm, 3-D RoPE and a sigmoid gate per query head.

    One projection yields ``[q | k | v | gate]``; the gate has one logit per query head.
    """

    def __init__(self, config: DiTConfig, num_experts: int, local: bool):
        super().__init__()
        self.local = local
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.num_kv_heads = config.num_query_groups
        self.gate_size = self.num_heads if config.enable_attn_gating else 0
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split_sizes = [q_size, kv_size, kv_size, self.gate_size]
        self.pre_norm = RMSNorm(config.hidden_size, num_experts)
        self.linear_qkv = ExpertLinear(config.hidden_size, sum(self.split_sizes), num_experts)
        self.linear_proj = ExpertLinear(q_size, config.hidden_size, num_experts)
        self.q_norm = RMSNorm(config.head_dim, num_experts)
        self.k_norm = RMSNorm(config.head_dim, num_experts)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], router: ModalityRouter, kernel: AttentionFn) -> Tensor:
        n = x.shape[0]
        h = self.pre_norm(x, router)
        q, k, v, gate = self.linear_qkv(h, router, torch.float32).split(self.split_sizes, dim=-1)
        q = self.q_norm(q.reshape(n, self.num_heads, self.head_dim), router)
        k = self.k_norm(k.reshape(n, self.num_kv_heads, self.head_dim), router)
        v = v.reshape(n, self.num_kv_heads, self.head_dim)
        q, k, v = router.ungroup(q), router.ungroup(k), router.ungroup(v)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = router.group(kernel(q, k, v, self.local))
        if self.gate_size:
            out = out * torch.sigmoid(gate).unsqueeze(-1)
        return self.linear_proj(out.reshape(n, -1), router, self.linear_proj.weight.dtype)


# ---------------------------------------------------------------------------------------
# MLP.


def gelu7(x: Tensor) -> Tensor:
    """GELU (sigmoid approximation) of ``x`` clamped from above at 7."""
    x = x.clamp(max=ACT_LIMIT)
    return x * torch.sigmoid(ACT_ALPHA * x)


def swiglu7(x: Tensor) -> Tensor:
    """Gated GELU over interleaved channels: even = gate, odd = linear (shifted by +1)."""
    gate, linear = x[..., ::2], x[..., 1::2]
    return gelu7(gate) * (linear.clamp(-ACT_LIMIT, ACT_LIMIT) + 1)


class MLP(nn.Module):
    """Pre-norm gelu7 / swiglu7 MLP.

    ``chunk_tokens`` (:attr:`ForwardOptions.mlp_chunk_tokens`, exact either way) runs it over at
    most that many tokens at a time: the fp32 intermediate (4x or 2 x 8/3 x hidden per token) is
    the largest activation of the model, about 23 GiB for a 1080p clip at full size.
    """

    def __init__(self, config: DiTConfig, num_experts: int, gated: bool):
        super().__init__()
        hidden = config.hidden_size
        intermediate = int(hidden * 8 / 3) // 4 * 4 if gated else 4 * hidden
        self.activation = swiglu7 if gated else gelu7
        self.pre_norm = RMSNorm(hidden, num_experts)
        self.up_gate_proj = ExpertLinear(hidden, intermediate * (2 if gated else 1), num_experts)
        self.down_proj = ExpertLinear(intermediate, hidden, num_experts)

    def forward(self, x: Tensor, router: ModalityRouter, chunk_tokens: int | None = None) -> Tensor:
        if chunk_tokens is None or x.shape[0] <= chunk_tokens:
            # the normed input dies inside the up projection: nothing holds it past there
            h = self.up_gate_proj(self.pre_norm(x, router), router, torch.float32)
            return self.down_proj(self.activation(h), router, torch.float32)
        normed = self.pre_norm(x, router)
        out = normed.new_empty(normed.shape, dtype=torch.float32)
        for start in range(0, normed.shape[0], chunk_tokens):
            end = min(start + chunk_tokens, normed.shape[0])
            window = router.window(start, end)
            h = self.up_gate_proj(normed[start:end], window, torch.float32)
            out[start:end] = self.down_proj(self.activation(h), window, torch.float32)
            del h
        return out


class TransformerLayer(nn.Module):
    """Pre-norm attention and MLP with residuals; optional post-norm on each branch."""

    def __init__(self, config: DiTConfig, index: int):
        super().__init__()
        num_experts = NUM_MODALITIES if index in config.mm_layers else 1
        self.attention = Attention(config, num_experts, local=index in config.local_attn_layers)
        self.mlp = MLP(config, num_experts, gated=index not in config.gelu7_layers)
        self.post_norm = index in config.post_norm_layers
        if self.post_norm:
            self.attn_post_norm = RMSNorm(config.hidden_size, num_experts)
            self.mlp_post_norm = RMSNorm(config.hidden_size, num_experts)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        router = layout.router
        a = self.attention(x, layout.rope, router, layout.attention)
        if self.post_norm:
            a = self.attn_post_norm(a, router)
        x = x + a
        m = self.mlp(x, router, layout.options.mlp_chunk_tokens)
        if self.post_norm:
            m = self.mlp_post_norm(m, router)
        return x + m


# ---------------------------------------------------------------------------------------
# The model.


@dataclass
class TokenLayout:
    """What a forward derives from token positions and modalities alone (built once per
    packed layout, e.g. once per sampler stage; the forward over it has no host sync), and
    the :class:`ForwardOptions` it was built with."""

    router: ModalityRouter
    rope: tuple[Tensor, Tensor]
    attention: AttentionFn
    options: ForwardOptions = ForwardOptions()


class RopeBands(nn.Module):
    """Holds the rotary inverse frequencies (a checkpoint key: ``adapter.rope.bands``)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer("bands", rope_bands(head_dim))


class Adapter(nn.Module):
    """fp32 input embedders, one per modality, from each modality's true channel count."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        hidden = config.hidden_size
        self.video_embedder = nn.Linear(config.video_in_channels, hidden)
        self.text_embedder = nn.Linear(config.text_in_channels, hidden)
        self.audio_embedder = nn.Linear(config.audio_in_channels, hidden)
        self.rope = RopeBands(config.head_dim)

    def forward(self, x: Tensor, router: ModalityRouter) -> Tensor:
        """Packed tokens in grouped order -> embeddings in grouped order (each modality one matmul)."""
        embedders = (self.video_embedder, self.audio_embedder, self.text_embedder)  # Modality order
        return torch.cat([e(part[:, : e.in_features]) for e, part in zip(embedders, router.split(x))])


class DiT(nn.Module):
    """Packed tokens ``[L, C]`` -> per-token velocity ``[L, max(video, audio) channels]``.

    The module holds weights only: how a forward runs (attention backend and dtype, MLP
    chunking) is a :class:`ForwardOptions` given to :meth:`layout`.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        self.adapter = Adapter(config)
        self.block = nn.ModuleDict({"layers": nn.ModuleList(TransformerLayer(config, i) for i in range(config.num_layers))})
        self.final_norm_video = RMSNorm(config.hidden_size)
        self.final_norm_audio = RMSNorm(config.hidden_size)
        self.final_linear_video = nn.Linear(config.hidden_size, config.video_in_channels, bias=False)
        self.final_linear_audio = nn.Linear(config.hidden_size, config.audio_in_channels, bias=False)

    def forward(self, packed: Packed, layout: TokenLayout | None = None) -> Tensor:
        """Velocity of ``packed``. ``layout`` (:meth:`layout` of the same packed layout, built
        once per sampler stage) keeps every host-side step out of the call, so the forward
        is one graph: ``torch.compile(model, fullgraph=True)`` then ``model(packed, layout)``."""
        layout = layout if layout is not None else self.layout(packed)
        return self.head(self.layers(self.embed(packed.x, layout), layout), layout)

    def layout(self, packed: Packed, options: ForwardOptions = ForwardOptions()) -> TokenLayout:
        """Everything that depends on where tokens are, not on their values, from the packed
        sample layouts alone: modality counts and order, rotary angles, attention spans/masks;
        run as ``options`` say."""
        device = packed.x.device
        kinds = tuple(sorted({layer.attention.local for layer in self.block.layers}))
        kernel = AttentionKernel(packed, options.attn_backend, options.attention_dtype(device), kinds)
        router = ModalityRouter.from_samples(packed.samples, device)
        return TokenLayout(router, fourier_angles(packed.coords, self.adapter.rope.bands), kernel, options)

    def forward_tokens(self, x: Tensor, coords: Tensor, modality: Tensor, attention: AttentionFn,
                       options: ForwardOptions = ForwardOptions()) -> Tensor:  # fmt: skip
        """The forward over any set of tokens, given how they attend.

        Everything but ``attention`` is token-wise, so context parallelism can call this on
        one rank's shard of the sequence with an ``attention`` that exchanges heads (built with
        ``options``' backend and dtype; the MLPs chunk as ``options`` say). The layout is read
        off ``coords`` and ``modality`` (host syncs: not for a compiled graph).
        """
        check_rope_coords(coords)
        rope = fourier_angles(coords, self.adapter.rope.bands)
        layout = TokenLayout(ModalityRouter(modality), rope, attention, options)
        return self.head(self.layers(self.embed(x, layout), layout), layout)

    # The phases of a forward. A sampler loop over one packed layout builds the layout once
    # and may call the phases itself (e.g. to capture ``layers`` in a CUDA graph).

    def embed(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """Packed tokens -> the residual stream, grouped by modality.

        As in the release, the stream stays in the adapter's parameter dtype (fp32): every
        residual add is fp32 from layer 0 on. (Casting it to the linears' bf16 here, as we once
        did, raises the golden error from 6.5e-3 to 7.7e-3.)
        """
        return self.adapter(layout.router.group(x.float()), layout.router)

    def layers(self, h: Tensor, layout: TokenLayout) -> Tensor:
        for layer in self.block.layers:
            h = layer(h, layout)
        return h

    def head(self, h: Tensor, layout: TokenLayout) -> Tensor:
        """Per-modality final norm + linear, back in sequence order; text rows stay zero."""
        width = max(self.config.video_in_channels, self.config.audio_in_channels)
        video, audio, text = layout.router.split(h.float())
        out = [F.pad(head(norm(part)), (0, width - head.out_features)) for part, norm, head in
               ((video, self.final_norm_video, self.final_linear_video),
                (audio, self.final_norm_audio, self.final_linear_audio))]  # fmt: skip
        return layout.router.ungroup(torch.cat([*out, text.new_zeros(text.shape[0], width)]))


@torch.no_grad()
def init_weights(model: DiT, seed: int = 0) -> DiT:
    """Random weights for self-made checkpoints and speed runs: N(0, 0.02) linears, small norm
    offsets, drawn on each parameter's own device (a full-size model never visits the host)."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, p in model.named_parameters():
        generator = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
        if name.endswith("bias"):
            values = torch.zeros(p.shape, device=p.device)
        elif p.dim() == 1:  # norm scales are stored as (weight + 1)
            values = 0.1 * torch.randn(p.shape, generator=generator, device=p.device)
        else:
            values = 0.02 * torch.randn(p.shape, generator=generator, device=p.device)
        p.copy_(values.to(p.dtype))
    model.adapter.rope.bands.copy_(rope_bands(model.config.head_dim))
    return model
