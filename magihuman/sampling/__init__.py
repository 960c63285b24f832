"""Samplers for the joint video+audio flow DiT: schedules, UniPC / DMD / SDE samplers, CFG, conditioning, SR."""

from .guidance import cfg_denoise, make_denoise, video_guidance_scale
from .samplers import (
    SAMPLERS,
    Constraint,
    Denoise,
    FixedAudio,
    ImageFirstFrame,
    NoiseFn,
    SamplerConfig,
    gaussian_noise,
    sample,
    sample_dmd,
    sample_sde,
    sample_unipc,
    sde_noise_theta,
)
from .schedules import (
    SR_NOISE_INDEX,
    flow_sigmas,
    flow_timesteps,
    sigma_to_timestep,
    sr_noise_sigma,
    zero_snr_ddpm_sigmas,
)
from .sr import SRConfig, prepare_sr_inputs, renoise_audio, renoise_video, sample_sr, upsample_video_latent

__all__ = [
    "SAMPLERS",
    "SR_NOISE_INDEX",
    "Constraint",
    "Denoise",
    "FixedAudio",
    "ImageFirstFrame",
    "NoiseFn",
    "SRConfig",
    "SamplerConfig",
    "cfg_denoise",
    "flow_sigmas",
    "flow_timesteps",
    "gaussian_noise",
    "make_denoise",
    "prepare_sr_inputs",
    "renoise_audio",
    "renoise_video",
    "sample",
    "sample_dmd",
    "sample_sde",
    "sample_sr",
    "sample_unipc",
    "sde_noise_theta",
    "sigma_to_timestep",
    "sr_noise_sigma",
    "upsample_video_latent",
    "video_guidance_scale",
    "zero_snr_ddpm_sigmas",
]
