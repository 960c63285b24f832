"""Tiny random-weight release: the real component classes at toy widths, saved as real checkpoints.

Everything keeps the production strides and latent widths (video 48 channels at 4x16x16,
audio 64 channels at 2048 samples per latent, text hidden states from a T5Gemma encoder), so
the whole pipeline runs end to end on a CPU in seconds. The checkpoints are written once, in
the release layout (see ``ReleaseLayout``), and loaded back through exactly the code used for
the real checkpoints:

    <cache>/release-v<TINY_VERSION>/
        Wan2.2-TI2V-5B/Wan2.2_VAE.pth                    original Wan2.2 naming
        turbo_vae/TurboV3-Wan22-TinyShallow_7_7.json     the release's turbo decoder: its config
        turbo_vae/checkpoint-340000.ckpt                 and a training checkpoint (ema_state_dict)
        stable-audio-open-1.0/vae/config.json            diffusers AutoencoderOobleck
        stable-audio-open-1.0/vae/diffusion_pytorch_model.safetensors
        t5gemma-9b-9b-ul2/{config.json, generation_config.json, model.safetensors,
                           tokenizer.json, tokenizer_config.json}
        base/ distill/ 540p_sr/ 1080p_sr/                written by ``write_tiny_dits``

Weights are seeded, so every build is bit-identical.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, AutoencoderOobleck
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5GemmaConfig, T5GemmaForConditionalGeneration

from magihuman.components import Components, ReleaseLayout, load_components
from magihuman.components.turbo_vae import (
    TURBO_CHECKPOINT_FILE,
    TURBO_CONFIG_FILE,
    TurboVAED,
    TurboVAEDConfig,
)
from magihuman.components.video_vae import (
    WAN22_VAE_CONFIG,
    WAN22_VAE_FILE,
    wan22_to_original_state_dict,
)

TINY_VERSION = 3  # bump when tiny weights or layout change: the cache directory name includes it
DEFAULT_CACHE_DIR = Path("~/.cache/magihuman/tiny")

# 2.9M parameters, Wan2.2-shaped: 12-channel patchified input, z_dim 48, stride 4 x 16 x 16.
TINY_VIDEO_VAE_CONFIG = {**WAN22_VAE_CONFIG, "base_dim": 16, "decoder_base_dim": 16, "num_res_blocks": 1}

# 0.4M parameters: the release's turbo layout (107M) at widths 8/16/24/32, one block per stage and
# two in the widest stages, with the release's 7-frame windows.
TINY_TURBO_VAE_CONFIG = TurboVAEDConfig(
    decoder_block_out_channels=(8, 16, 24, 32),
    decoder_layers_per_block=(1, 1, 1, 2, 2),
    first_chunk_size=7,
    step_size=7,
)

# Hop 2*4*4*8*8 = 2048 samples, 64 latent channels. The encoder width is pinned at 128 (its last
# conv emits mean and scale, 2 x 64), so only the multiples and the decoder can shrink.
TINY_AUDIO_VAE_CONFIG = dict(
    encoder_hidden_size=128,
    downsampling_ratios=[2, 4, 4, 8, 8],
    channel_multiples=[1, 1, 1, 1, 1],
    decoder_channels=16,
    decoder_input_channels=64,
    audio_channels=2,
    sampling_rate=44100,  # as in the real config; the wrapper runs the VAE at 51.2 kHz regardless
)

# Gemma-style special tokens with Gemma's ids; the rest of the vocabulary is the 256 byte symbols.
TINY_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")

TINY_TEXT_MODULE_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=64,
    max_position_embeddings=4096,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global RNG for the block, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_video_vae() -> AutoencoderKLWan:
    with _seeded(1):
        return AutoencoderKLWan(**TINY_VIDEO_VAE_CONFIG).eval()


def tiny_turbo_vae() -> TurboVAED:
    with _seeded(4):
        return TurboVAED(TINY_TURBO_VAE_CONFIG).eval()


def write_turbo_release(model: TurboVAED, directory: Path) -> None:
    """``model`` as the release ships it: the JSON constructor arguments and a training checkpoint
    holding the weights under ``ema_state_dict`` with the ``module.decoder.`` prefix."""
    directory.mkdir(parents=True)
    config = {"in_channels": 3, **model.config.to_dict(), "decoder_causal": False, "use_unpatchify": True}
    (directory / TURBO_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    weights = {f"module.decoder.{k}": v for k, v in model.state_dict().items()}
    torch.save({"ema_state_dict": weights, "step": 340000}, directory / TURBO_CHECKPOINT_FILE)


def tiny_audio_vae() -> AutoencoderOobleck:
    with _seeded(2), warnings.catch_warnings():  # diffusers builds it with the deprecated weight_norm helper
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return AutoencoderOobleck(**TINY_AUDIO_VAE_CONFIG).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (any text encodes, no unknowns) that frames a prompt as ``<bos> ... <eos>``."""
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(TINY_SPECIAL_TOKENS + tuple(symbols))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_text_model(vocab_size: int) -> T5GemmaForConditionalGeneration:
    """Full encoder-decoder, like the released checkpoint (the encoder wrapper ignores the decoder)."""
    module = dict(TINY_TEXT_MODULE_CONFIG, vocab_size=vocab_size)
    config = T5GemmaConfig(encoder=module, decoder=module, vocab_size=vocab_size)
    with _seeded(3):
        return T5GemmaForConditionalGeneration(config).eval()


def write_tiny_dits(root: Path) -> None:
    """Tiny random DiTs as real checkpoint directories: ``base/``, ``distill/``, ``540p_sr/``, ``1080p_sr/``."""
    from magihuman.model import DiT
    from magihuman.model.checkpoint import save_state_dict
    from magihuman.model.dit import init_weights
    from magihuman.model.presets import TINY, TINY_SR_1080P

    for seed, (name, config) in enumerate(
        (("base", TINY), ("distill", TINY), ("540p_sr", TINY), ("1080p_sr", TINY_SR_1080P))
    ):
        save_state_dict(init_weights(DiT(config), seed=10 + seed).state_dict(), root / name)


def write_tiny_release(root: str | Path) -> ReleaseLayout:
    """Write every tiny checkpoint into ``root`` in the release layout."""
    layout = ReleaseLayout(Path(root))
    layout.video_vae.mkdir(parents=True)
    torch.save(wan22_to_original_state_dict(tiny_video_vae()), layout.video_vae / WAN22_VAE_FILE)
    write_turbo_release(tiny_turbo_vae(), layout.turbo_vae)
    tiny_audio_vae().save_pretrained(layout.audio_vae / "vae")
    tokenizer = tiny_tokenizer()
    tiny_text_model(len(tokenizer)).save_pretrained(layout.text_encoder)
    tokenizer.save_pretrained(layout.text_encoder)
    write_tiny_dits(layout.root)
    return layout


def ensure_tiny_release(cache_dir: str | Path | None = None) -> ReleaseLayout:
    """The tiny release under ``cache_dir`` (default ``~/.cache/magihuman/tiny``), built on first use.

    Built in a staging directory and renamed into place, so concurrent callers and interrupted
    builds never expose a half-written release.
    """
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    root = cache_dir / f"release-v{TINY_VERSION}"
    if not root.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
        try:
            write_tiny_release(staging / "release")
            try:
                (staging / "release").rename(root)
            except OSError:
                if not root.is_dir():  # not a lost race with another builder
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ReleaseLayout(root)


def load_tiny_components(
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    decoder: str = "turbo",
) -> Components:
    """Tiny text encoder, video VAE, video decoder and audio VAE, loaded through the real-checkpoint loaders."""
    return load_components(ensure_tiny_release(cache_dir), device, dtype, audio_dtype=dtype, decoder=decoder)
