"""Super-resolution stage: upsample the base video latent, partially re-noise it, refine it with a short UniPC run.

The audio is only context for the SR model: it enters heavily re-noised, is never updated, and the final
audio is the base stage's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .samplers import Constraint, Denoise, FixedAudio, SamplerConfig, gaussian_noise, sample
from .schedules import SR_NOISE_INDEX, sr_noise_sigma


@dataclass(frozen=True)
class SRConfig:
    """SR stage settings: the sampler, the zero-SNR table index of the video re-noising and the audio noise
    fraction (the last two are how the release's SR models were trained, not switches).

    The sampler has no default here: the ``sr`` config group (``configs/sr/default.yaml``: 5 UniPC steps in
    one pass, the release's SR guidance) is its one owner; outside Hydra build it with
    ``magihuman.configs.build_group("sr", "default")``.
    """

    sampler: SamplerConfig
    noise_index: int = SR_NOISE_INDEX
    audio_noise_scale: float = 0.7


def upsample_video_latent(video: Tensor, size: Sequence[int]) -> Tensor:
    """Trilinear (align_corners=True) resize of a `[B?, C, T, H, W]` latent to `size = (T, H, W)`."""
    batched = video.dim() == 5
    out = F.interpolate(video if batched else video[None], size=tuple(size), mode="trilinear", align_corners=True)
    return out if batched else out[0]


def renoise_video(video: Tensor, sigma: float, noise: Tensor) -> Tensor:
    """Variance-preserving re-noising `x * sigma + eps * sqrt(1 - sigma^2)`."""
    return video * sigma + noise * (1 - sigma**2) ** 0.5


def renoise_audio(audio: Tensor, noise_scale: float, noise: Tensor) -> Tensor:
    """`noise_scale * eps + (1 - noise_scale) * audio`."""
    return noise * noise_scale + audio * (1 - noise_scale)


def prepare_sr_inputs(
    config: SRConfig, video: Tensor, audio: Tensor, size: Sequence[int], generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Initial SR states from the base-stage latents (video noise is drawn before audio noise)."""
    noise = gaussian_noise(generator)
    up = upsample_video_latent(video, size)
    sr_video = renoise_video(up, sr_noise_sigma(config.noise_index), noise(up))
    sr_audio = renoise_audio(audio, config.audio_noise_scale, noise(audio))
    return sr_video, sr_audio


def sample_sr(
    config: SRConfig,
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    size: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    constraints: Sequence[Constraint] = (),
) -> tuple[Tensor, Tensor]:
    """Refine base latents `(video, audio)` at latent size `size`; returns `(sr_video, audio)` (base audio).

    `denoise` wraps the SR model (build it with `guidance.make_denoise(config.sampler, velocity)`);
    `constraints` takes e.g. `ImageFirstFrame(image_latent_at_sr_resolution)` for TI2V.
    """
    sr_video, sr_audio = prepare_sr_inputs(config, video, audio, size, generator)
    sr_video, _ = sample(
        config.sampler, denoise, sr_video, sr_audio, generator=generator, constraints=(FixedAudio(sr_audio), *constraints)
    )
    return sr_video, audio
