"""Tiny Wan2.2-shaped VAE decode (SPEC 6 config): 5 latent frames at 16x28 -> 17 frames at 448x256."""

from __future__ import annotations

import torch


def decode(vae, latent):
    with torch.inference_mode():
        return vae.decode(latent).sample


def test_vae_decode_tiny(benchmark, tiny_vae):
    benchmark.group = "vae_decode"
    latent = torch.randn(1, 48, 5, 16, 28, generator=torch.Generator().manual_seed(0))
    video = benchmark.pedantic(decode, args=(tiny_vae, latent), rounds=3, warmup_rounds=1)
    assert video.shape == (1, 3, 17, 256, 448)
