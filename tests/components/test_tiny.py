"""Tiny release: real checkpoint files in the release layout, loaded by the real loaders."""

import os
import re
import shutil

import pytest
import torch

from magihuman.components import (
    OobleckAudioVAE,
    ReleaseLayout,
    T5GemmaTextEncoder,
    TurboVideoDecoder,
    WanVideoVAE,
    load_components,
)
from magihuman.components.tiny import (
    TINY_VERSION,
    ensure_tiny_release,
    tiny_audio_vae,
    tiny_text_model,
    tiny_tokenizer,
    tiny_turbo_vae,
    tiny_video_vae,
)
from magihuman.model.checkpoint import CheckpointError


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_release_layout_matches_public_repos(tiny_release, tiny_cache_dir):
    assert tiny_release.root == tiny_cache_dir / f"release-v{TINY_VERSION}"
    assert (tiny_release.video_vae / "Wan2.2_VAE.pth").is_file()
    assert (tiny_release.turbo_vae / "TurboV3-Wan22-TinyShallow_7_7.json").is_file()
    assert (tiny_release.turbo_vae / "checkpoint-340000.ckpt").is_file()
    assert (tiny_release.audio_vae / "vae" / "config.json").is_file()
    assert (tiny_release.audio_vae / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (tiny_release.text_encoder / name).is_file(), name
    assert [p.name for p in tiny_cache_dir.iterdir()] == [tiny_release.root.name]  # no staging left behind


def test_round_trip_through_real_loaders(tiny_release, tiny_components):
    assert _same_tensors(tiny_components.video_vae.model.state_dict(), tiny_video_vae().state_dict())
    assert _same_tensors(tiny_components.audio_vae.model.state_dict(), tiny_audio_vae().state_dict())
    tokenizer = tiny_tokenizer()
    saved = tiny_text_model(len(tokenizer)).state_dict()
    encoder = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.encoder.")}
    assert _same_tensors(tiny_components.text_encoder.model.state_dict(), encoder)
    prompt = "A man says, 'hello — 你好'."
    assert tiny_components.text_encoder.tokenizer(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
    assert _same_tensors(tiny_components.video_decoder.model.state_dict(), tiny_turbo_vae().state_dict())
    assert isinstance(tiny_components.video_vae, WanVideoVAE)
    assert isinstance(tiny_components.video_decoder, TurboVideoDecoder)  # the release's default decoder
    assert isinstance(tiny_components.audio_vae, OobleckAudioVAE)
    assert isinstance(tiny_components.text_encoder, T5GemmaTextEncoder)


def test_tokenizer_has_pad_and_eos(tiny_components):
    tokenizer = tiny_components.text_encoder.tokenizer
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>"
    ids = tokenizer("hi")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_ensure_is_idempotent(tiny_release, tiny_cache_dir):
    marker = os.stat(tiny_release.video_vae / "Wan2.2_VAE.pth").st_mtime_ns
    again = ensure_tiny_release(tiny_cache_dir)
    assert again == tiny_release
    assert os.stat(again.video_vae / "Wan2.2_VAE.pth").st_mtime_ns == marker


def test_builds_are_deterministic_and_leave_rng_alone():
    state = torch.random.get_rng_state()
    assert _same_tensors(tiny_video_vae().state_dict(), tiny_video_vae().state_dict())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_failed_build_leaves_no_release(tmp_path, monkeypatch):
    def broken(root):
        raise RuntimeError("disk full")

    monkeypatch.setattr("magihuman.components.tiny.write_tiny_dits", broken)
    try:
        ensure_tiny_release(tmp_path)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the build error was swallowed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "component, file",
    [("video_vae", "Wan2.2_VAE.pth"), ("text_encoder", "model.safetensors"), ("text_encoder", "tokenizer.json"),
     ("audio_vae", "vae/diffusion_pytorch_model.safetensors")],
)  # fmt: skip
def test_a_truncated_component_file_is_named(tiny_release, tmp_path, component, file):
    root = tmp_path / "release"
    shutil.copytree(tiny_release.root, root)
    victim = getattr(ReleaseLayout(root), component) / file
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cannot load the .* from {re.escape(str(victim))}: "):
        load_components(ReleaseLayout(root))
