"""The prompt suite and the typed request of a resolved config.

A case is a prompt plus, for TI2V / A2V, a reference image and speech. Cases that name no
media use a synthetic talking face and speech-like audio generated once into the cache
(the repo ships no media), so every mode runs anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from magihuman.cli.errors import ConfigError
from magihuman.pipeline import GenerationRequest, MagiHumanPipeline

DEFAULT_MEDIA_DIR = Path.home() / ".cache" / "magihuman" / "prompts"
MODES = ("t2v", "ti2v", "a2v")


@dataclass(frozen=True)
class PromptCase:
    id: str
    prompt: str
    image: Path | None = None  # None: the synthetic face
    audio: Path | None = None  # None: the synthetic speech


def synthetic_media(directory: Path | None = None) -> tuple[Path, Path]:
    """(face.png, speech.wav), written once: a drawn face and 12 s of syllable-rate speech."""
    from magihuman.eval.synthetic import draw_face, speech_like_audio

    directory = Path(directory or DEFAULT_MEDIA_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    image, speech = directory / "face.png", directory / "speech.wav"
    if not image.exists():
        tmp = image.with_suffix(".tmp.png")
        Image.fromarray(draw_face(512, 896, mouth_open=0.3)).save(tmp)
        tmp.replace(image)
    if not speech.exists():
        signal, _ = speech_like_audio(12.0, 16000, np.random.default_rng(0))
        tmp = speech.with_suffix(".tmp.wav")
        sf.write(tmp, signal, 16000)
        tmp.replace(speech)
    return image, speech


def find_case(cases, case_id: str) -> PromptCase:
    for case in cases:
        if case["id"] == case_id:
            return PromptCase(
                id=case["id"],
                prompt=case["prompt"],
                image=Path(case["image"]) if case.get("image") else None,
                audio=Path(case["audio"]) if case.get("audio") else None,
            )
    raise ConfigError(f"unknown prompt_id {case_id!r}; the suite has {[c['id'] for c in cases]}")


def case_inputs(cfg: DictConfig) -> tuple[str, Path | None, Path | None]:
    """(prompt text, image, audio) of a resolved generate/sweep config.

    ``prompt`` (when not null) overrides the case's prompt; the mode decides which media are
    used, and a mode that needs media the config does not name gets the synthetic face /
    speech.
    """
    mode = cfg.mode.name
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {MODES}")
    case = find_case(cfg.prompts.cases, cfg.prompt_id)
    image = cfg.mode.get("image") or case.image
    audio = cfg.mode.get("audio") or case.audio
    if (mode in ("ti2v", "a2v") and image is None) or (mode == "a2v" and audio is None):
        face, speech = synthetic_media(cfg.prompts.get("media_dir"))
        image, audio = image or face, audio or speech
    return (case.prompt if cfg.get("prompt") is None else cfg.prompt,
            Path(image) if mode in ("ti2v", "a2v") else None, Path(audio) if mode == "a2v" else None)  # fmt: skip


def build_request(cfg: DictConfig, output: Path | None = None) -> GenerationRequest:
    """The typed, validated request of a resolved generate/sweep config (and its ``output``).

    Validated by :meth:`MagiHumanPipeline.check_inputs` (the API's rules too), run here so that
    bad input fails before any model loads; the request carries its media bytes, read once.
    """
    prompt, image, audio = case_inputs(cfg)
    request = GenerationRequest(
        prompt=prompt,
        image=image,
        audio=audio,
        duration=float(cfg.duration),
        resolution=cfg.resolution.name,
        sampler=instantiate(cfg.sampler),
        seed=cfg.seed,
        distilled_a2v_audio=cfg.mode.get("distilled_audio", "pinned"),
    )
    return MagiHumanPipeline.check_inputs(request, output)
