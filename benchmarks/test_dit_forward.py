"""DiT forward on CPU: the tiny preset and a mid-size config (SPEC 6: reference ~1.3 s on 2 cores)."""

from __future__ import annotations

import torch

from magihuman.clip import SampleTokens
from magihuman.harness.flops import forward_flops
from magihuman.model import DiT, Packed, pack


def forward(model: DiT, packed: Packed) -> torch.Tensor:
    with torch.inference_mode():
        return model(packed)


def describe(benchmark, model: DiT, packed: Packed) -> None:
    s = packed.samples[0]
    flops = forward_flops(model.config, [SampleTokens(s.grid, s.num_audio, s.num_text)])
    benchmark.group = "dit_forward"
    benchmark.extra_info.update(tokens=flops.tokens, gflop=round(flops.total / 1e9, 3))


def test_dit_forward_tiny(benchmark, tiny_model, tiny_clip):
    packed = pack(tiny_clip.video, tiny_clip.audio, tiny_clip.text)
    describe(benchmark, tiny_model, packed)
    out = benchmark(forward, tiny_model, packed)
    assert out.shape == (tiny_clip.tokens, 192) and torch.isfinite(out).all()


def test_dit_forward_mid(benchmark, mid_model, mid_clip):
    packed = pack(mid_clip.video, mid_clip.audio, mid_clip.text)
    describe(benchmark, mid_model, packed)
    out = benchmark.pedantic(forward, args=(mid_model, packed), rounds=5, warmup_rounds=1)
    assert out.shape == (1585, 192) and torch.isfinite(out).all()
