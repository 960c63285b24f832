"""Oobleck audio VAE wrapper: 25 latents per second at 51.2 kHz in, 44.1 kHz out."""

import numpy as np
import pytest
import torch

from magihuman.media import OUTPUT_SAMPLE_RATE, VAE_SAMPLE_RATE


def _tone(seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * VAE_SAMPLE_RATE)) / VAE_SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([wave] * channels) if channels > 1 else wave


def test_one_second_gives_25_latents(tiny_components):
    vae = tiny_components.audio_vae
    latents = vae.encode(_tone(1.0))
    assert vae.latent_rate == 25
    assert latents.shape == (25, 64) and latents.dtype == torch.float32


def test_decode_is_44k1_stereo_of_exact_length(tiny_components):
    vae = tiny_components.audio_vae
    latents = torch.randn(26, 64, generator=torch.Generator().manual_seed(0))
    audio = vae.decode(latents)
    assert audio.shape == (2, 26 * 2048 * OUTPUT_SAMPLE_RATE // VAE_SAMPLE_RATE) == (2, 26 * 1764)
    assert audio.dtype == np.float32
    assert vae.decode_vae_rate(latents).shape == (2, 26 * 2048)


def test_mono_is_copied_to_both_channels(tiny_components):
    vae = tiny_components.audio_vae
    mono = _tone(0.2)
    torch.testing.assert_close(vae.encode(mono), vae.encode(np.stack([mono, mono])))
    assert vae.encode(mono).shape == (vae.num_latents(mono.size), 64) == (5, 64)


def test_sampling_uses_the_generator(tiny_components):
    vae = tiny_components.audio_vae
    wave = _tone(0.2)
    first = vae.encode(wave, generator=torch.Generator().manual_seed(1))
    again = vae.encode(wave, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, vae.encode(wave))


def test_bad_inputs_are_rejected(tiny_components):
    vae = tiny_components.audio_vae
    with pytest.raises(ValueError, match="shorter than one latent"):
        vae.encode(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="expected latents"):
        vae.decode(torch.zeros(4, 32))
