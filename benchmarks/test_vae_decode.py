"""Tiny video decode, Wan2.2-shaped VAE (SPEC 6 config) vs the turbo decoder, on the same latents:
5 latent frames at 16x28 -> 17 frames at 448x256. ``test_turbo_decode_pr`` (the ``pr``
selection) decodes 2 latent frames of 2x2 -> 5 frames at 32x32."""

from __future__ import annotations

import pytest
import torch

from magihuman.components.tiny import tiny_turbo_vae


def decode(vae, latent):
    with torch.inference_mode():
        return vae.decode(latent).sample


def turbo_decode(decoder, latent):
    with torch.inference_mode():
        return decoder.decode(latent)


@pytest.fixture(scope="module")
def latent():
    return torch.randn(1, 48, 5, 16, 28, generator=torch.Generator().manual_seed(0))


def test_vae_decode_tiny(benchmark, tiny_vae, latent):
    benchmark.group = "vae_decode"
    video = benchmark.pedantic(decode, args=(tiny_vae, latent), rounds=3, warmup_rounds=1)
    assert video.shape == (1, 3, 17, 256, 448)


def test_turbo_decode_tiny(benchmark, latent):
    """The release's default decoder at the tiny preset's widths (0.4M parameters, 7-frame windows)."""
    benchmark.group = "vae_decode"
    video = benchmark.pedantic(turbo_decode, args=(tiny_turbo_vae(), latent), rounds=3, warmup_rounds=1)
    assert video.shape == (1, 3, 17, 256, 448)


@pytest.mark.pr
def test_turbo_decode_pr(benchmark):
    benchmark.group = "vae_decode"
    latent = torch.randn(1, 48, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    video = benchmark(turbo_decode, tiny_turbo_vae(), latent)
    assert video.shape == (1, 3, 5, 32, 32) and torch.isfinite(video).all()
