"""Stable Audio Open VAE: diffusers ``AutoencoderOobleck`` run at 51.2 kHz, 25 latents per second.

MagiHuman feeds the 44.1 kHz-trained Oobleck VAE waveforms resampled to 51.2 kHz, so its
2048-sample hop yields 25 latents per second (one per video frame); decoded waveforms are
read as 51.2 kHz and resampled to 44.1 kHz. The ``sampling_rate`` in the checkpoint config
(44100 for the real release) is therefore ignored on purpose.

Checkpoint layout: ``stabilityai/stable-audio-open-1.0``, diffusers weights under ``vae/``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderOobleck

from magihuman.media import OUTPUT_SAMPLE_RATE, VAE_SAMPLE_RATE, resample_to_output_rate


class OobleckAudioVAE:
    """Waveform ``[n]`` / ``[C, n]`` at 51.2 kHz <-> latents ``[Na, 64]`` at 25 Hz."""

    sample_rate = VAE_SAMPLE_RATE
    output_sample_rate = OUTPUT_SAMPLE_RATE

    def __init__(self, model: AutoencoderOobleck):
        self.model = model.eval().requires_grad_(False)
        self.hop_length = int(np.prod(model.config.downsampling_ratios))
        self.latent_dim = model.config.decoder_input_channels
        self.channels = model.config.audio_channels

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> OobleckAudioVAE:
        """Load from a ``stable-audio-open-1.0`` directory (diffusers VAE in ``vae/``) or a bare VAE directory."""
        path = Path(path)
        subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
        if subfolder is None and not (path / "config.json").is_file():
            raise FileNotFoundError(f"no Oobleck VAE in {path}: expected vae/config.json (stable-audio-open-1.0)")
        with warnings.catch_warnings():  # diffusers still builds it with the deprecated weight_norm helper
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            model = AutoencoderOobleck.from_pretrained(path, subfolder=subfolder, dtype=dtype)
        return cls(model.to(device))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def latent_rate(self) -> float:
        """Latents per second (25 for the release config)."""
        return self.sample_rate / self.hop_length

    def num_latents(self, num_samples: int) -> int:
        """Latents produced for ``num_samples`` samples at 51.2 kHz (a partial last hop is dropped)."""
        return num_samples // self.hop_length

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor | np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """51.2 kHz waveform ``[n]`` (mono, copied to every channel) or ``[C, n]`` -> latents ``[n // 2048, 64]``.

        Returns the posterior mean; pass ``generator`` to draw a posterior sample instead (the
        reference samples).
        """
        x = torch.as_tensor(waveform, dtype=torch.float32)
        if x.ndim == 1:
            x = x.expand(self.channels, -1)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected waveform [n] or [{self.channels}, n], got {tuple(x.shape)}")
        if x.shape[1] < self.hop_length:
            raise ValueError(f"waveform is shorter than one latent ({self.hop_length} samples)")
        dist = self.model.encode(x.to(device=self.device, dtype=self.dtype).unsqueeze(0)).latent_dist
        latents = dist.mode() if generator is None else dist.sample(generator)
        return latents[0].T.float().contiguous()

    @torch.inference_mode()
    def decode_vae_rate(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[Na, 64]`` -> waveform ``[C, Na * 2048]`` float32 at 51.2 kHz."""
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents [Na, {self.latent_dim}], got {tuple(latents.shape)}")
        z = latents.T.unsqueeze(0).to(device=self.device, dtype=self.dtype)
        return self.model.decode(z).sample[0].float()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents ``[Na, 64]`` -> waveform ``[C, Na * 1764]`` float32 numpy at 44.1 kHz."""
        return resample_to_output_rate(self.decode_vae_rate(latents).cpu().numpy())
