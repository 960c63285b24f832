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

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import trange

from .schedules import flow_sigmas

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


def drawn_noise(generator: torch.Generator | None, video: Tensor, audio: Tensor, steps: int) -> NoiseFn:
    """A sampler's per-step noise drawn up front: the same draws as `gaussian_noise` (video then audio, step by
    step), moved to the latents' device in one copy per stream, so the loop never waits on a host transfer."""
    device = generator.device if generator is not None else video.device
    draws = [torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device)
             for _ in range(steps) for like in (video, audio)]  # fmt: skip
    banks = [torch.stack(draws[0::2]).to(video.device), torch.stack(draws[1::2]).to(audio.device)] if draws else []
    order = iter([bank[i] for i in range(steps) for bank in banks])

    def noise(like: Tensor) -> Tensor:
        drawn = next(order)
        if drawn.shape != like.shape:
            raise RuntimeError(f"drawn noise {list(drawn.shape)} does not fit {list(like.shape)}: draws out of order")
        return drawn

    return noise


# -------------------------------------------------------------------------------------------------- samplers


def _unipc_sigmas(sigmas: Tensor) -> Tensor:
    """The float32 sigma table diffusers' flow UniPC builds from ours (flow_shift=1 is the identity; a first
    sigma within 1e-6 of 1 is nudged below it so log(sigma) stays finite)."""
    if float(sigmas[-1]) != 0.0:
        raise ValueError("UniPC expects a terminal sigma of 0")
    s = sigmas[:-1].double().cpu().numpy().copy()
    if abs(s[0] - 1) < 1e-6:
        s[0] -= 1e-6
    return torch.from_numpy(np.append(s, 0.0).astype(np.float32))


def _lambda(sigma: Tensor) -> Tensor:
    """Half log-SNR of a flow sigma: log(alpha) - log(sigma) with alpha = 1 - sigma."""
    return torch.log(1 - sigma) - torch.log(sigma)


def _unipc_coefficients(sig: Tensor, s0: int, t: int, order: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Scalars of one UniPC-bh2 update from sigma index `s0` to `t` (x0-prediction): the weights of the
    state, of the newest model output and of the order-2 difference, `rk` (that difference's scale) and the
    corrector's `rhos` (solved on the host). All float32 0-dim host tensors, computed as diffusers does."""
    sigma_t, sigma_s0 = sig[t], sig[s0]
    alpha_t = 1 - sigma_t
    h = _lambda(sigma_t) - _lambda(sigma_s0)
    rk = (_lambda(sig[s0 - 1]) - _lambda(sigma_s0)) / h if order == 2 else torch.ones(())
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = torch.expm1(hh)
    rks = torch.stack([rk, torch.ones(())]) if order == 2 else torch.ones(1)
    powers, b, factorial = [], [], 1
    for i in range(1, order + 1):
        powers.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    rhos = torch.linalg.solve(torch.stack(powers), torch.stack(b)) if order == 2 else torch.ones(1) * 0.5
    return sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, rk, rhos


class _UniPC:
    """Flow UniPC (order 2, bh2, x0-prediction, lower order on the last step) for one stream.

    The update is diffusers' `UniPCMultistepScheduler` (bit-identical on CPU, golden error 0.0) with its
    scalar arithmetic kept on the host: diffusers moves each sigma to the latents' device and solves the
    corrector there, a host sync per step on a GPU, so the loop could not run ahead of the device.
    """

    def __init__(self, sigmas: Tensor):
        self.sig = _unipc_sigmas(sigmas)
        self.steps = len(self.sig) - 1
        self.outputs: list[Tensor] = []  # converted model outputs (x0 predictions), newest last, at most 2
        self.last_sample: Tensor | None = None
        self.order = 1

    def step(self, i: int, velocity: Tensor, x: Tensor) -> Tensor:
        x0 = x - self.sig[i] * velocity
        if self.last_sample is not None:  # correct the state the last prediction landed on
            x = self._update(i - 1, i, self.order, self.last_sample, x0)
        self.outputs = [*self.outputs[-1:], x0]
        self.order = min(2, self.steps - i, len(self.outputs))
        self.last_sample = x
        return self._update(i, i + 1, self.order, x, None)

    def _update(self, s0: int, t: int, order: int, x: Tensor, model_t: Tensor | None) -> Tensor:
        """Predictor (`model_t` None) or corrector (`model_t`: the new x0 prediction) from sigma index `s0` to
        `t`, over the newest output `m0` and, at order 2, its difference to the one before."""
        state_w, m0_w, diff_w, rk, rhos = _unipc_coefficients(self.sig, s0, t, order)
        m0 = self.outputs[-1]
        x_t = state_w * x - m0_w * m0
        d1 = (self.outputs[-2] - m0) / rk if order == 2 else None
        if model_t is None:
            res = 0.5 * d1 if d1 is not None else 0
            return (x_t - diff_w * res).to(x.dtype)
        res = rhos[0] * d1 if d1 is not None else 0
        return (x_t - diff_w * (res + rhos[-1] * (model_t - m0))).to(x.dtype)


def sample_unipc(
    denoise: Denoise,
    video: Tensor,
    audio: Tensor,
    sigmas: Tensor,
    *,
    constraints: Sequence[Constraint] = (),
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Flow UniPC (order 2, bh2, x0-prediction, lower order on the last step); deterministic, one solver per stream."""
    video_solver, audio_solver = _UniPC(sigmas), _UniPC(sigmas)
    for i in trange(len(sigmas) - 1, disable=not progress, desc="unipc", leave=False):
        video, audio = _constrain(constraints, video, audio)
        v_video, v_audio = denoise(video, audio, float(sigmas[i]))
        video = video_solver.step(i, v_video, video)
        audio = audio_solver.step(i, v_audio, audio)
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
    noise = noise or drawn_noise(generator, video, audio, len(sigmas) - 1)
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
    noise = noise or drawn_noise(generator, video, audio, len(sigmas) - 1)
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


DITS = ("base", "distill")
"""The release's two base-stage DiTs (its `base/` and `distill/` checkpoints)."""


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings (built by Hydra from `configs/sampler/*.yaml`).

    `cfg_passes=2` means classifier-free guidance from one batched cond+uncond call (see `guidance.make_denoise`);
    the video scale drops to `late_guidance_scale` once the timestep is <= `guidance_switch_timestep`
    (None: no switch), and the first `capped_frames` latent frames are capped at `capped_frame_scale` (SR).
    `dit` names the base-stage DiT the sampler runs on, as the release pairs them: `distill` (trained for
    DMD without CFG) or `base` (UniPC / SDE with CFG); the SR stage's DiT is the resolution's SR model.
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
    dit: str = "base"

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose from {sorted(SAMPLERS)}")
        if self.dit not in DITS:
            raise ValueError(f"sampler.dit={self.dit!r}: expected one of {DITS}")
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
