"""Ecosystem components around the DiT: text encoder, video VAE, audio VAE, and where they live.

The release layout is the one the reference configs point at: the GAIR/daVinci-MagiHuman
repository (``base/``, ``distill/``, ``540p_sr/``, ``1080p_sr/``, ``turbo_vae/``) with the three
external repositories checked out next to it under their repository names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from magihuman.components.audio_vae import OobleckAudioVAE
from magihuman.components.text_encoder import MAX_TEXT_TOKENS, T5GemmaTextEncoder
from magihuman.components.video_vae import VideoLatentGeometry, WanVideoVAE

__all__ = [
    "MAX_TEXT_TOKENS",
    "Components",
    "OobleckAudioVAE",
    "ReleaseLayout",
    "T5GemmaTextEncoder",
    "VideoLatentGeometry",
    "WanVideoVAE",
    "load_components",
]


@dataclass(frozen=True)
class ReleaseLayout:
    """Paths of every checkpoint directory under one release root."""

    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def distill(self) -> Path:
        return self.root / "distill"

    @property
    def sr_540p(self) -> Path:
        return self.root / "540p_sr"

    @property
    def sr_1080p(self) -> Path:
        return self.root / "1080p_sr"

    @property
    def turbo_vae(self) -> Path:
        return self.root / "turbo_vae"

    @property
    def video_vae(self) -> Path:
        """``Wan-AI/Wan2.2-TI2V-5B`` (the VAE is its ``Wan2.2_VAE.pth``)."""
        return self.root / "Wan2.2-TI2V-5B"

    @property
    def audio_vae(self) -> Path:
        """``stabilityai/stable-audio-open-1.0`` (the VAE is its ``vae/``)."""
        return self.root / "stable-audio-open-1.0"

    @property
    def text_encoder(self) -> Path:
        """``google/t5gemma-9b-9b-ul2``."""
        return self.root / "t5gemma-9b-9b-ul2"


@dataclass(frozen=True)
class Components:
    """The three non-DiT models a pipeline needs."""

    text_encoder: T5GemmaTextEncoder
    video_vae: WanVideoVAE
    audio_vae: OobleckAudioVAE


def load_components(
    layout: ReleaseLayout,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    audio_dtype: torch.dtype = torch.float32,
) -> Components:
    """Load text encoder and video VAE in ``dtype`` and the audio VAE in ``audio_dtype`` (fp32 in the reference)."""
    return Components(
        text_encoder=T5GemmaTextEncoder.from_pretrained(layout.text_encoder, device, dtype),
        video_vae=WanVideoVAE.from_pretrained(layout.video_vae, device, dtype),
        audio_vae=OobleckAudioVAE.from_pretrained(layout.audio_vae, device, audio_dtype),
    )
