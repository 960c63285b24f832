"""Full vs local attention at the same token count (the SR models' block-sparse layers).

1917 tokens (16 latent frames of 8x14 patches, 61 audio, 64 text), 8 query heads over 2
KV groups, head_dim 64, fp32 SDPA per span on CPU. Local uses frame receptive field 1: a video token
sees 3 frames plus all audio and text.
"""

from __future__ import annotations

import pytest
import torch

from magihuman.clip import SampleTokens
from magihuman.harness.flops import full_attention_pairs, local_attention_pairs
from magihuman.model import pack
from magihuman.model.dit import AttentionKernel

HEADS, KV_HEADS, HEAD_DIM, RECEPTIVE_FIELD = 8, 2, 64, 1


@pytest.fixture(scope="module")
def layout():
    g = torch.Generator().manual_seed(0)
    video, audio, text = torch.zeros(48, 16, 16, 28), torch.zeros(61, 64), torch.zeros(64, 32)
    packed = pack(video, audio, text, frame_receptive_field=RECEPTIVE_FIELD)
    n = packed.x.shape[0]
    q = torch.randn(n, HEADS, HEAD_DIM, generator=g)
    k, v = torch.randn(2, n, KV_HEADS, HEAD_DIM, generator=g)
    return AttentionKernel(packed, "sdpa", torch.float32), q, k, v


def run(kernel, q, k, v, local):
    with torch.inference_mode():
        return kernel(q, k, v, local)


@pytest.mark.parametrize("kind", ["full", "local_rf1"])
def test_attention(benchmark, layout, kind):
    kernel, q, k, v = layout
    tokens = SampleTokens(grid=(16, 8, 14), num_audio=61, num_text=64)
    pairs = full_attention_pairs(tokens) if kind == "full" else local_attention_pairs(tokens, RECEPTIVE_FIELD)
    benchmark.group = "attention"
    benchmark.extra_info.update(tokens=tokens.length, gflop=round(4 * HEADS * HEAD_DIM * pairs / 1e9, 3))
    out = benchmark(run, kernel, q, k, v, kind != "full")
    assert out.shape == q.shape and torch.isfinite(out).all()
