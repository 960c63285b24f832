"""Analytic FLOPs of one DiT forward (token counts of a clip: :mod:`magihuman.clip`).

What is counted (multiply-add = 2 FLOP):

- **Linears**: ``2 * active_params_per_token`` per token (counted on the layers built on
  meta). Each token runs only through its own modality's expert in the sandwich layers, so
  experts never multiply the count. The adapter (per-modality input embedder) and the output heads (video, audio)
  are included with their true in/out widths; biases are not counted.
- **Attention**: ``QK^T`` and ``PV`` are ``2 * head_dim`` FLOP each per (query head,
  query, key) pair, i.e. ``4 * heads * head_dim * pairs`` per layer. GQA shares K/V
  but does not reduce this work. Full layers attend within each sample
  (``pairs = L^2``); local layers let a video token of latent frame ``i`` see video
  frames ``[i - rf, i + rf]`` (clipped) plus all audio and text, while audio and text
  tokens see the whole sample (see ``packing.local_attention_ranges``).
- **Neglected**: RMSNorms, RoPE, the sigmoid gate, MLP activations and residual adds (a few
  FLOP per element against thousands for the matmuls: ~0.1% of the linears), and softmax
  (~5 FLOP per score against ``4 * head_dim`` = 512: ~1% of the attention). Under 1% in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from magihuman.clip import FRAME_RECEPTIVE_FIELD, SampleTokens
from magihuman.model.dit import DiT, DiTConfig, ExpertLinear

# ---------------------------------------------------------------------------------------
# Parameters touched per token.


@cache
def _layers(config: DiTConfig) -> nn.ModuleList:
    with torch.device("meta"):  # shapes only: nothing allocated
        return DiT(config).block.layers


def layer_params_per_token(config: DiTConfig, index: int) -> int:
    """Weights one token multiplies with in layer ``index`` (one expert's share), counted on the
    layer built on meta (no copy of its widths here)."""
    linears = (m for m in _layers(config)[index].modules() if isinstance(m, ExpertLinear))
    return sum(m.weight.numel() // m.num_experts for m in linears)


def block_params_per_token(config: DiTConfig) -> int:
    """Active transformer-block weights per token (~10.9B at full size)."""
    return sum(layer_params_per_token(config, i) for i in range(config.num_layers))


# ---------------------------------------------------------------------------------------
# Attention pairs.


def full_attention_pairs(sample: SampleTokens) -> int:
    return sample.length**2


def local_attention_pairs(sample: SampleTokens, receptive_field: int = FRAME_RECEPTIVE_FIELD) -> int:
    """(query, key) pairs of a local layer for one sample."""
    t, per_frame = sample.grid[0], sample.frame_tokens
    other = sample.num_audio + sample.num_text
    video = 0
    for i in range(t):
        frames = min(i + receptive_field, t - 1) - max(i - receptive_field, 0) + 1
        video += per_frame * (frames * per_frame + other)
    return video + other * sample.length


# ---------------------------------------------------------------------------------------
# One forward.


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one DiT forward over a packed batch, split by where they are spent."""

    block_linear: float  # transformer linears (qkv, proj, MLP up / down)
    adapter_head: float  # input embedders and output heads
    attention: float  # QK^T and PV over all layers
    tokens: int

    @property
    def total(self) -> float:
        return self.block_linear + self.adapter_head + self.attention

    def __mul__(self, k: int) -> ForwardFlops:
        """FLOPs of ``k`` forwards (e.g. sampler steps)."""
        return ForwardFlops(self.block_linear * k, self.adapter_head * k, self.attention * k, self.tokens)

    __rmul__ = __mul__


def adapter_head_flops(config: DiTConfig, sample: SampleTokens) -> float:
    hidden = config.hidden_size
    video = sample.num_video * 2 * hidden * (config.video_in_channels * 2)  # embedder in + head out
    audio = sample.num_audio * 2 * hidden * (config.audio_in_channels * 2)
    text = sample.num_text * 2 * hidden * config.text_in_channels  # no text head
    return float(video + audio + text)


def forward_flops(
    config: DiTConfig, samples: Sequence[SampleTokens], receptive_field: int = FRAME_RECEPTIVE_FIELD
) -> ForwardFlops:
    """FLOPs of one forward over ``samples`` packed together (e.g. cond + uncond for CFG)."""
    tokens = sum(s.length for s in samples)
    per_pair = 4 * config.num_heads * config.head_dim
    num_local = len(config.local_attn_layers)
    num_full = config.num_layers - num_local
    attention = 0
    for s in samples:
        attention += num_full * full_attention_pairs(s) + num_local * local_attention_pairs(s, receptive_field)
    return ForwardFlops(
        block_linear=2.0 * block_params_per_token(config) * tokens,
        adapter_head=sum(adapter_head_flops(config, s) for s in samples),
        attention=float(per_pair * attention),
        tokens=tokens,
    )
