"""Noise schedules: shifted flow-matching sigmas and the zero-terminal-SNR DDPM table used by SR."""

from __future__ import annotations

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
# The reference reads sigma_max back from a float32 training table, so it is 0.999 rounded to float32.
FLOW_SIGMA_MAX = float(np.float32(0.999))
SR_NOISE_INDEX = 220


def flow_sigmas(num_steps: int, shift: float = 5.0) -> torch.Tensor:
    """`num_steps + 1` float64 flow sigmas: linspace(0.999, 0) shifted by `shift`, with a terminal 0.

    Computed in float64 numpy like the reference so `int(sigma * 1000)` reproduces its timesteps exactly.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    s = np.linspace(FLOW_SIGMA_MAX, 0.0, num_steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.from_numpy(np.append(s, 0.0))


def sigma_to_timestep(sigma: float) -> int:
    """Discrete model timestep of a flow sigma (truncation, as the reference's int64 cast)."""
    return int(float(sigma) * NUM_TRAIN_TIMESTEPS)


def flow_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """Integer timesteps of every non-terminal sigma."""
    return torch.tensor([sigma_to_timestep(s) for s in sigmas[:-1].tolist()], dtype=torch.int64)


def zero_snr_ddpm_sigmas(
    num_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """sqrt(alpha_bar) of the linear-in-sqrt DDPM schedule rescaled to zero terminal SNR (float32, [1000]).

    The reference calls these "sigmas" and flips them twice, so entry 0 is the cleanest (~0.9996) and the
    last is exactly 0; the SR stage keeps `sigma` of the signal and adds `sqrt(1 - sigma^2)` of noise.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    a = torch.from_numpy(np.cumprod(1.0 - betas.numpy())).to(torch.float32).sqrt()
    a0, a_last = a[0].clone(), a[-1].clone()
    return (a - a_last) * (a0 / (a0 - a_last))


def sr_noise_sigma(index: int = SR_NOISE_INDEX) -> float:
    """Signal coefficient of the SR re-noising (entry `index` of the zero-SNR table; 0.8389 for 220)."""
    return float(zero_snr_ddpm_sigmas()[index])
