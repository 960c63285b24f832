"""Every component's architecture, by release size, and the one way to build it with random weights.

``RELEASE_ARCHS["full"]`` is what the released checkpoints hold (the four 15B DiTs, the T5Gemma
9B encoder, the Wan2.2 VAE, the turbo decoder, stable-audio-open's Oobleck VAE);
``RELEASE_ARCHS["tiny"]`` is the tiny release the tests and the default runs use. Loading from
checkpoint directories (``MagiHumanPipeline.from_pretrained``) reads the same DiT configs.

:func:`random_components` and :func:`build_dit` build the real classes on any device: on
``meta`` they allocate nothing (the memory planner counts their bytes there); on a GPU they
are created there directly, so a full-size model never visits the host (the speed table
times them). Nothing here restates a shape: the tiny configs are those the tiny release
writes, the full ones those the release's config files carry.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKLWan, AutoencoderOobleck
from transformers import T5GemmaConfig, T5GemmaEncoderModel

from magihuman.components import Components, OobleckAudioVAE, T5GemmaTextEncoder, TurboVideoDecoder, WanVideoVAE
from magihuman.components.turbo_vae import TurboVAED, TurboVAEDConfig
from magihuman.components.video_vae import WAN22_VAE_CONFIG
from magihuman.model import DiT, DiTConfig
from magihuman.model.dit import init_weights
from magihuman.model.presets import FULL, FULL_SR_540P, FULL_SR_1080P, TINY, TINY_SR_1080P

DIT_NAMES = ("base", "distill", "540p_sr", "1080p_sr")  # the release's DiT checkpoint directories

# t5gemma-9b-9b-ul2's encoder (Gemma 2 9B shaped), as its config.json gives it.
T5GEMMA_9B_ENCODER = dict(
    hidden_size=3584,
    intermediate_size=14336,
    num_hidden_layers=42,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    vocab_size=256000,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)


@dataclass(frozen=True)
class ReleaseArch:
    """The architecture of every component of one release size."""

    name: str
    dits: dict[str, DiTConfig]  # by checkpoint directory: base, distill, 540p_sr, 1080p_sr
    text_encoder: dict  # the T5Gemma encoder module's config (``T5GemmaConfig(encoder=...)``)
    video_vae: dict  # ``AutoencoderKLWan`` kwargs
    turbo_vae: TurboVAEDConfig
    audio_vae: dict = field(default_factory=dict)  # ``AutoencoderOobleck`` kwargs ({}: stable-audio-open's)


def _tiny() -> ReleaseArch:
    from magihuman.components.tiny import (  # the tiny release's own configs (it writes them)
        TINY_AUDIO_VAE_CONFIG,
        TINY_TEXT_MODULE_CONFIG,
        TINY_TURBO_VAE_CONFIG,
        TINY_VIDEO_VAE_CONFIG,
        tiny_tokenizer,
    )

    return ReleaseArch(
        name="tiny",
        dits={"base": TINY, "distill": TINY, "540p_sr": TINY, "1080p_sr": TINY_SR_1080P},
        text_encoder=dict(TINY_TEXT_MODULE_CONFIG, vocab_size=len(tiny_tokenizer())),
        video_vae=TINY_VIDEO_VAE_CONFIG,
        turbo_vae=TINY_TURBO_VAE_CONFIG,
        audio_vae=TINY_AUDIO_VAE_CONFIG,
    )


def _full() -> ReleaseArch:
    return ReleaseArch(
        name="full",
        dits={"base": FULL, "distill": FULL, "540p_sr": FULL_SR_540P, "1080p_sr": FULL_SR_1080P},
        text_encoder=T5GEMMA_9B_ENCODER,
        video_vae=WAN22_VAE_CONFIG,
        turbo_vae=TurboVAEDConfig(),  # TurboV3-Wan22-TinyShallow_7_7.json
    )


RELEASE_ARCHS = {"full": _full, "tiny": _tiny}


def release_arch(name: str) -> ReleaseArch:
    try:
        return RELEASE_ARCHS[name]()
    except KeyError:
        raise ValueError(f"unknown release architecture {name!r}; expected one of {sorted(RELEASE_ARCHS)}") from None


# ---------------------------------------------------------------------------------------
# Building with random weights.


@contextlib.contextmanager
def _building(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters on ``device`` in ``dtype`` (no fp32 copy of a bf16 model, no host copy
    of a GPU one), seeded, without the deprecated-weight_norm warning diffusers' Oobleck raises."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            yield
    finally:
        torch.set_default_dtype(default)


def build_dit(config: DiTConfig, device: torch.device | str, seed: int = 0) -> DiT:
    """A DiT with random weights (:func:`~magihuman.model.dit.init_weights`) made directly on
    ``device``: built on meta, allocated there, filled there. On ``meta`` it stays unallocated."""
    with torch.device("meta"):
        model = DiT(config)
    if torch.device(device).type == "meta":
        return model.eval().requires_grad_(False)
    model.to_empty(device=device)
    return init_weights(model, seed).eval().requires_grad_(False)


def build_text_model(arch: ReleaseArch, device: torch.device | str, dtype: torch.dtype) -> T5GemmaEncoderModel:
    module = arch.text_encoder
    config = T5GemmaConfig(encoder=module, decoder=module, vocab_size=module["vocab_size"], is_encoder_decoder=False)
    with _building(device, dtype):
        return T5GemmaEncoderModel(config).eval().requires_grad_(False)


def build_video_vae(arch: ReleaseArch, device: torch.device | str, dtype: torch.dtype) -> AutoencoderKLWan:
    with _building(device, dtype):
        return AutoencoderKLWan(**arch.video_vae).eval().requires_grad_(False)


def build_turbo_vae(arch: ReleaseArch, device: torch.device | str, dtype: torch.dtype) -> TurboVAED:
    with _building(device, dtype):
        return TurboVAED(arch.turbo_vae).eval().requires_grad_(False)


def build_audio_vae(arch: ReleaseArch, device: torch.device | str, dtype: torch.dtype) -> AutoencoderOobleck:
    with _building(device, dtype):
        return AutoencoderOobleck(**arch.audio_vae).eval().requires_grad_(False)


def random_components(
    arch: ReleaseArch | str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    audio_dtype: torch.dtype = torch.float32,
    decoder: str = "turbo",
    seed: int = 0,
) -> Components:
    """The pipeline's components with random weights, built on ``device`` (``meta``: shapes only).

    Same dtypes as :func:`~magihuman.components.load_components`: ``dtype`` for the text encoder
    and video models, ``audio_dtype`` (fp32, as the reference) for the audio VAE. The tokenizer is
    the tiny release's byte-level one: any prompt encodes to ids every vocabulary holds.
    """
    from magihuman.components.tiny import tiny_tokenizer

    arch = release_arch(arch) if isinstance(arch, str) else arch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        video_vae = WanVideoVAE(build_video_vae(arch, device, dtype))
        return Components(
            text_encoder=T5GemmaTextEncoder(build_text_model(arch, device, dtype), tiny_tokenizer()),
            video_vae=video_vae,
            audio_vae=OobleckAudioVAE(build_audio_vae(arch, device, audio_dtype)),
            video_decoder=TurboVideoDecoder(build_turbo_vae(arch, device, dtype)) if decoder == "turbo" else video_vae,
        )
