"""k-diffusion style samplers over a joint denoiser `denoise(video, audio, sigma) -> (v_video, v_audio)`.

Flow convention: `x_sigma = sigma * noise + (1 - sigma) * x0`, velocity `v = noise - x0`, so `x0 = x - sigma * v`.
Every sampler walks `sigmas` (descending, terminal 0) and applies `constraints` (TI2V / A2V conditioning)
to the state before every denoiser call and once at the end. States carry a leading batch dim
(video `[B, C, T, H, W]`, audio `[B, N, C]`); the denoiser gets `sigma` as a float, its timestep is `int(sigma*1000)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import UniPCMultistepScheduler
from torch import Tensor
from tqdm.auto import trange

from .schedules import flow_sigmas, sigma_to_timestep

Denoise = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]
"""`(video, audio, sigma) -> (v_video, v_audio)`: the (guided) flow velocity of both streams at `sigma`."""
Constraint = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""`(video, audio) -> (video, audio)`: a conditioning projection applied to the sampler state."""
NoiseFn = Callable[[Tensor], Tensor]
"""Returns fresh noise shaped like its argument; called once per stream per step (video first, then audio)."""


# ---------------------------------------------------------------------------------------------- conditioning


@dataclass(frozen=True)
class ImageFirstFrame:
    """TI2V: pin latent frame 0 (time axis -3 of `[B?, C, T, H, W]`) to the encoded image latent."""

    image_latent: Tensor

    def __call__(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        video = video.clone()  # never write into the caller's tensor or a scheduler's saved sample
        video[..., :1, :, :] = self.image_latent[..., :1, :, :]
        return video, audio


@dataclass(frozen=True)
class FixedAudio:
    """A2V (and the SR stage): the audio latent is given and never updated."""

    audio_latent: Tensor

    def __call__(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        return video, self.audio_latent


def _constrain(constraints: Sequence[Constraint], video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
    for c in constraints:
        video, audio = c(video, audio)
    return video, audio


# ---------------------------------------------------------------------------------------------------- noise


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseFn:
    """Standard normal noise drawn from `generator` on the generator's device (CPU noise moved to the latent's
    device, as the reference does, so a seed gives the same noise on any accelerator)."""

    def noise(like: Tensor) -> Tensor:
        device = generator.device if generator is not None else like.device
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)

    return noise


# -------------------------------------------------------------------------------------------------- samplers


def _unipc_scheduler(sigmas: Tensor) -> UniPCMultistepScheduler:
    # diffusers' default flow sigmas (linspace(1, 1/1000)) drift ~5e-3 from the reference; passing our sigmas
    # with flow_shift=1 (identity) reproduces the reference states bit-exactly (golden error 0.0).
    if float(sigmas[-1]) != 0.0:
        raise ValueError("UniPC expects a terminal sigma of 0")
    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=1.0,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(sigmas=sigmas[:-1].double().cpu().numpy())
    sched.set_begin_index(0)  # step by counter, never by timestep lookup (timesteps can repeat)
    return sched


def sample_unipc(
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    sigmas: Tensor,
    *,
    constraints: Sequence[Constraint] = (),
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Flow UniPC (order 2, bh2, x0-prediction, lower order on the last step); deterministic, one scheduler per stream."""
    video_sched, audio_sched = _unipc_scheduler(sigmas), _unipc_scheduler(sigmas)
    for i in trange(len(sigmas) - 1, disable=not progress, desc="unipc", leave=False):
        video, audio = _constrain(constraints, video, audio)
        sigma = float(sigmas[i])
        v_video, v_audio = denoise(video, audio, sigma)
        t = sigma_to_timestep(sigma)
        video = video_sched.step(v_video, t, video, return_dict=False)[0]
        audio = audio_sched.step(v_audio, t, audio, return_dict=False)[0]
    return _constrain(constraints, video, audio)


def sample_dmd(
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    sigmas: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: NoiseFn | None = None,
    constraints: Sequence[Constraint] = (),
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Distilled (DMD) sampler: predict x0, then re-noise it to the next sigma with fresh noise each step."""
    noise = noise or gaussian_noise(generator)
    sig = sigmas.to(torch.float32)  # the reference does the update arithmetic with float32 sigmas
    for i in trange(len(sigmas) - 1, disable=not progress, desc="dmd", leave=False):
        video, audio = _constrain(constraints, video, audio)
        s, s_next = sig[i], sig[i + 1]
        v_video, v_audio = denoise(video, audio, float(sigmas[i]))
        video = s_next * noise(video) + (1 - s_next) * (video - s * v_video)
        audio = s_next * noise(audio) + (1 - s_next) * (audio - s * v_audio)
    return _constrain(constraints, video, audio)


def sde_noise_theta(step: int, num_steps: int) -> float:
    """Reference theta schedule: noisy (1) on every odd step for the first 3/4, then on every third step."""
    if step < (3 * num_steps) // 4:
        return 1.0 if (step + 1) % 2 == 0 else 0.0
    return 1.0 if step % 3 == 0 else 0.0


def sample_sde(
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    sigmas: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: NoiseFn | None = None,
    constraints: Sequence[Constraint] = (),
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Flow SDE: mean `(1 - s' + s' cos)(x - s v) + s' cos v`, std `s' sin`, angle `theta * pi / 2`.

    theta = 0 is a plain Euler flow step, theta = 1 the DMD re-noising step; `sde_noise_theta` alternates them.
    """
    noise = noise or gaussian_noise(generator)
    sig = sigmas.to(torch.float32)
    n = len(sigmas) - 1
    for i in trange(n, disable=not progress, desc="sde", leave=False):
        video, audio = _constrain(constraints, video, audio)
        s, s_next = sig[i], sig[i + 1]
        angle = sde_noise_theta(i, n) * math.pi / 2
        keep, std = s_next * math.cos(angle), s_next * math.sin(angle)
        v_video, v_audio = denoise(video, audio, float(sigmas[i]))
        video = (1 - s_next + keep) * (video - s * v_video) + keep * v_video + std * noise(video)
        audio = (1 - s_next + keep) * (audio - s * v_audio) + keep * v_audio + std * noise(audio)
    return _constrain(constraints, video, audio)


# ---------------------------------------------------------------------------------------- config & dispatch

SAMPLERS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "unipc_cfg": sample_unipc,
    "dmd": sample_dmd,
    "sde": sample_sde,
}
STOCHASTIC = frozenset({"dmd", "sde"})


@dataclass
class SamplerConfig:
    """Sampler settings (built by Hydra from `configs/sampler/*.yaml`).

    `cfg_passes=2` means classifier-free guidance from one batched cond+uncond call (see `guidance.make_denoise`);
    the video scale drops to `late_guidance_scale` once the timestep is <= `guidance_switch_timestep`
    (None: no switch), and the first `capped_frames` latent frames are capped at `capped_frame_scale` (SR).
    """

    name: str = "unipc_cfg"
    num_steps: int = 32
    shift: float = 5.0
    cfg_passes: int = 2
    guidance_scale: float = 5.0
    late_guidance_scale: float | None = 2.0
    guidance_switch_timestep: int = 500
    audio_guidance_scale: float = 5.0
    capped_frames: int = 0
    capped_frame_scale: float = 2.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose from {sorted(SAMPLERS)}")
        if self.cfg_passes not in (1, 2):
            raise ValueError(f"cfg_passes must be 1 or 2, got {self.cfg_passes}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    def sigmas(self) -> Tensor:
        return flow_sigmas(self.num_steps, self.shift)


def sample(
    config: SamplerConfig,
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: NoiseFn | None = None,
    constraints: Sequence[Constraint] = (),
) -> tuple[Tensor, Tensor]:
    """Run the sampler named by `config` from the initial states `(video, audio)` over the config's flow sigmas."""
    kwargs = dict(constraints=constraints, progress=config.progress)
    if config.name in STOCHASTIC:
        kwargs.update(generator=generator, noise=noise)
    return SAMPLERS[config.name](denoise, video, audio, config.sigmas(), **kwargs)
