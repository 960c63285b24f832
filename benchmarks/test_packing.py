"""Packing at the real 256p 5 s shapes and channel widths (video 48 ch, audio 64, text 3584)."""

from __future__ import annotations

import pytest
import torch

from magihuman.model import concat, pack, unpack


@pytest.fixture(scope="module")
def clip_256p():
    g = torch.Generator().manual_seed(0)
    video = torch.randn(48, 32, 16, 28, generator=g)
    return video, torch.randn(125, 64, generator=g), torch.randn(300, 3584, generator=g)


@pytest.mark.pr
def test_pack(benchmark, clip_256p):
    benchmark.group = "packing"
    packed = benchmark(pack, *clip_256p)
    assert packed.x.shape == (32 * 8 * 14 + 125 + 300, 3584)


def test_concat_cfg(benchmark, clip_256p):
    benchmark.group = "packing"
    video, audio, text = clip_256p
    cond, uncond = pack(video, audio, text), pack(video, audio, torch.cat([text, text]))
    packed = benchmark(concat, [cond, uncond])
    assert len(packed.samples) == 2


def test_unpack(benchmark, clip_256p):
    benchmark.group = "packing"
    packed = pack(*clip_256p)
    out = torch.randn(packed.x.shape[0], 192)
    (video, audio), = benchmark(unpack, out, packed)
    assert video.shape == (48, 32, 16, 28) and audio.shape == (125, 64)
