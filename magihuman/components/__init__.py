"""Ecosystem components around the DiT: text encoder, video VAE, audio VAE, and where they live.

The release layout is the one the reference configs point at: the GAIR/daVinci-MagiHuman
repository (``base/``, ``distill/``, ``540p_sr/``, ``1080p_sr/``, ``turbo_vae/``) with the three
external repositories checked out next to it under their repository names.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open

from magihuman.components.audio_vae import OobleckAudioVAE
from magihuman.components.text_encoder import MAX_TEXT_TOKENS, T5GemmaTextEncoder
from magihuman.components.turbo_vae import TurboVideoDecoder
from magihuman.components.video_vae import VideoLatentGeometry, WanVideoVAE
from magihuman.model.checkpoint import CheckpointError

T = TypeVar("T")

__all__ = [
    "MAX_TEXT_TOKENS",
    "Components",
    "OobleckAudioVAE",
    "ReleaseLayout",
    "T5GemmaTextEncoder",
    "TurboVideoDecoder",
    "VIDEO_DECODERS",
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
        """The release's distilled video decoder: ``TurboV3-Wan22-TinyShallow_7_7.json`` + ``checkpoint-340000.ckpt``."""
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


# Which model turns the final video latents into pixels: the release's turbo decoder (its
# default, ``use_turbo_vae: true``) or the full Wan2.2 VAE decoder.
VIDEO_DECODERS = ("turbo", "wan")


@dataclass(frozen=True)
class Components:
    """The non-DiT models a pipeline needs. ``video_vae`` encodes images (and decodes with
    ``decoder=wan``); ``video_decoder`` decodes the generated latents and is ``video_vae``
    itself unless the turbo decoder is chosen."""

    text_encoder: T5GemmaTextEncoder
    video_vae: WanVideoVAE
    audio_vae: OobleckAudioVAE
    video_decoder: TurboVideoDecoder | WanVideoVAE


def load_components(
    layout: ReleaseLayout,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    audio_dtype: torch.dtype = torch.float32,
    decoder: str = "turbo",
) -> Components:
    """Load text encoder, video VAE and ``decoder`` in ``dtype`` and the audio VAE in ``audio_dtype``
    (fp32 in the reference). ``decoder``: ``turbo`` (the release's default) or ``wan``.

    A component that fails to load raises :class:`CheckpointError` naming it and the file that
    failed (upstream loaders report a truncated file without its name).
    """
    if decoder not in VIDEO_DECODERS:
        raise ValueError(f"decoder must be one of {VIDEO_DECODERS}, got {decoder!r}")
    video_vae = _load("Wan2.2 video VAE", layout.video_vae,
                      lambda: WanVideoVAE.from_pretrained(layout.video_vae, device, dtype))  # fmt: skip
    return Components(
        text_encoder=_load("T5Gemma text encoder", layout.text_encoder,
                           lambda: T5GemmaTextEncoder.from_pretrained(layout.text_encoder, device, dtype)),
        video_vae=video_vae,
        audio_vae=_load("Oobleck audio VAE", layout.audio_vae,
                        lambda: OobleckAudioVAE.from_pretrained(layout.audio_vae, device, audio_dtype)),
        video_decoder=_load("turbo video decoder", layout.turbo_vae,
                            lambda: TurboVideoDecoder.from_pretrained(layout.turbo_vae, device, dtype))
        if decoder == "turbo" else video_vae,
    )  # fmt: skip


def _load(what: str, directory: Path, load: Callable[[], T]) -> T:
    try:
        return load()
    except FileNotFoundError:
        raise  # the loaders' own message names what is missing
    except Exception as error:  # noqa: BLE001 - any upstream failure gets the file's name
        raise CheckpointError(
            f"cannot load the {what} from {_unreadable_file(directory)}: {type(error).__name__}: {error}"
        ) from error


def _unreadable_file(directory: Path) -> Path:
    """The first checkpoint file under ``directory`` that does not open (else the directory):
    safetensors must open with a complete header, torch archives must be whole zip files,
    JSON (configs, tokenizers) must parse."""
    for path in sorted(directory.rglob("*")):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pth", ".pt", ".bin", ".ckpt") and not zipfile.is_zipfile(path):
                return path
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except (SafetensorError, OSError, ValueError):
            return path
    return directory
