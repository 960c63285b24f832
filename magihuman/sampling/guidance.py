"""Classifier-free guidance: turn a batched velocity function into a sampler `Denoise`.

The caller binds the texts: `velocity(video[2B], audio[2B], sigma)` must use the conditional text for the first
B rows and the negative (unconditional) text for the last B rows, so both passes run as ONE model call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .samplers import Denoise, SamplerConfig
from .schedules import sigma_to_timestep

Velocity = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


def video_guidance_scale(
    timestep: int,
    num_frames: int,
    *,
    scale: float,
    late_scale: float | None = 2.0,
    switch_timestep: int = 500,
    capped_frames: int = 0,
    frame_cap: float = 2.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-latent-frame video CFG scale `[T, 1, 1]` (broadcasts over `[..., T, H, W]`), filled on `device`
    (no host-to-device copy inside a sampler loop).

    `late_scale` replaces `scale` once `timestep <= switch_timestep` (less over-saturation late in sampling);
    the first `capped_frames` frames use `min(frame_cap, scale)` (SR trick against over-exposure of the start).
    """
    s = late_scale if late_scale is not None and timestep <= switch_timestep else scale
    scales = torch.full((num_frames, 1, 1), float(s), device=device)
    scales[:capped_frames] = min(frame_cap, s)
    return scales


def cfg_denoise(
    velocity: Velocity,
    *,
    scale: float,
    audio_scale: float,
    late_scale: float | None = 2.0,
    switch_timestep: int = 500,
    capped_frames: int = 0,
    frame_cap: float = 2.0,
) -> Denoise:
    """Wrap a batched cond/uncond `velocity` into `denoise` with `v = v_uncond + s * (v_cond - v_uncond)`."""

    def denoise(video: Tensor, audio: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        v_video, v_audio = velocity(torch.cat([video, video]), torch.cat([audio, audio]), sigma)
        cond_v, uncond_v = v_video.chunk(2)
        cond_a, uncond_a = v_audio.chunk(2)
        s = video_guidance_scale(
            sigma_to_timestep(sigma),
            video.shape[-3],
            scale=scale,
            late_scale=late_scale,
            switch_timestep=switch_timestep,
            capped_frames=capped_frames,
            frame_cap=frame_cap,
            device=video.device,
        ).to(cond_v.dtype)
        return uncond_v + s * (cond_v - uncond_v), uncond_a + audio_scale * (cond_a - uncond_a)

    return denoise


def make_denoise(config: SamplerConfig, velocity: Velocity) -> Denoise:
    """The denoiser `config` asks for: CFG over a cond+uncond batch (`cfg_passes=2`), else `velocity` itself
    (one conditional pass; bind only the conditional text)."""
    if config.cfg_passes == 1:
        return velocity
    return cfg_denoise(
        velocity,
        scale=config.guidance_scale,
        audio_scale=config.audio_guidance_scale,
        late_scale=config.late_guidance_scale,
        switch_timestep=config.guidance_switch_timestep,
        capped_frames=config.capped_frames,
        frame_cap=config.capped_frame_scale,
    )
