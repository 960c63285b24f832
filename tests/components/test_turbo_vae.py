"""Turbo decoder: golden parity with the release's module, its window layout, and loading the release's files."""

import argparse
import json

import pytest
import torch

from magihuman.components.tiny import tiny_turbo_vae, write_turbo_release
from magihuman.components.turbo_vae import (
    TURBO_CHECKPOINT_FILE,
    TURBO_CONFIG_FILE,
    TURBO_SAFETENSORS_FILE,
    TurboVAED,
    TurboVAEDConfig,
    TurboVideoDecoder,
    convert_turbo_checkpoint,
    load_turbo_vaed,
)
from tests.golden import golden_params, read_golden, rel_l2


def _golden_decoder(path) -> tuple[TurboVAED, dict[str, torch.Tensor]]:
    meta, tensors = read_golden(path)
    model = TurboVAED(TurboVAEDConfig.from_dict(meta["config"]["turbo_vaed"])).eval()
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    return model, tensors


@pytest.mark.golden
@pytest.mark.parametrize("path", golden_params("turbo_vaed_*.safetensors"))
def test_golden_turbo_decode(path):
    model, tensors = _golden_decoder(path)
    with torch.no_grad():
        video = model.decode(tensors["in.latent"])
    assert video.shape == tensors["out.video"].shape
    assert rel_l2(video, tensors["out.video"]) <= 1e-4


# The release's TurboV3-Wan22-TinyShallow_7_7.json as published configs mirror it (training-only keys included).
RELEASE_CONFIG = {
    "_class_name": "TurboVAED", "in_channels": 3, "out_channels": 3, "latent_channels": 48, "scaling_factor": 1.0,
    "spatial_compression_ratio": 16, "temporal_compression_ratio": 4,
    "decoder_block_out_channels": [64, 128, 256, 512], "decoder_layers_per_block": [2, 2, 2, 3, 3],
    "decoder_spatio_temporal_scaling": [False, True, True, True], "decoder_spatio_only": [False, True, False, False],
    "decoder_is_dw_conv": [False] * 5, "decoder_dw_kernel_size": 5, "decoder_causal": False, "resnet_norm_eps": 1e-6,
    "aligned_feature_projection_mode": "conv-2layer", "aligned_feature_projection_dim": [[512, 1024], [512, 1024]],
    "aligned_blks_indices": [0, 1], "patch_size": 2, "patch_size_t": 1, "use_unpatchify": True,
    "first_chunk_size": 7, "step_size": 7,
}  # fmt: skip


def test_release_config_builds_the_107m_decoder():
    with torch.device("meta"):
        model = TurboVAED(TurboVAEDConfig.from_dict(RELEASE_CONFIG))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == 107
    assert "up_blocks.1.upsamplers.0.time_conv.conv.weight" in model.state_dict()
    assert "up_blocks.2.upsamplers.0.time_conv.conv.weight" not in model.state_dict()  # spatial-only stage


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decoder_inject_noise": True}, "unknown keys"),
        ({"decoder_causal": True}, "decoder_causal=True is not supported"),
        ({"use_unpatchify": False}, "use_unpatchify=False is not supported"),
        ({"decoder_spatio_only": [False, True, True, False]}, "strides 2 x 16"),
        ({"decoder_layers_per_block": [2, 2, 3, 3]}, "needs 5 entries"),
    ],
)
def test_bad_configs_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        TurboVAEDConfig.from_dict({**RELEASE_CONFIG, **change})


def test_separable_convs_keep_shapes():
    config = TurboVAEDConfig(decoder_block_out_channels=(8, 8, 8, 8), decoder_layers_per_block=(1,) * 5,
                             decoder_is_dw_conv=(True,) * 5, decoder_dw_kernel_size=5)  # fmt: skip
    model = TurboVAED(config)
    assert "mid_block.resnets.0.conv1.depthwise_conv.weight" in model.state_dict()
    with torch.no_grad():
        assert model.decode(torch.randn(1, 48, 3, 2, 2)).shape == (1, 3, 9, 32, 32)


# --- the release's files --------------------------------------------------------------------


@pytest.fixture
def release_dir(tmp_path):
    """A ``turbo_vae/`` directory as released: JSON + training checkpoint with an extra training head."""
    model = tiny_turbo_vae()
    write_turbo_release(model, tmp_path / "turbo_vae")
    ckpt = tmp_path / "turbo_vae" / TURBO_CHECKPOINT_FILE
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["ema_state_dict"]["module.aligned_feature_projection_heads.0.0.conv.weight"] = torch.zeros(4, 32, 1)
    torch.save(checkpoint, ckpt)
    return tmp_path / "turbo_vae", model


def test_release_files_load_strictly_and_decode_the_same(release_dir):
    path, model = release_dir
    decoder = TurboVideoDecoder.from_pretrained(path)
    reference = model.state_dict()
    assert decoder.model.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in decoder.model.state_dict().items())
    latents = torch.randn(48, 9, 2, 3, generator=torch.Generator().manual_seed(0))
    pixels = decoder.decode(latents)
    assert pixels.shape == (3, 33, 32, 48) and pixels.abs().max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(pixels, model.decode(latents[None])[0].clamp(-1, 1))


def test_pickled_checkpoint_is_refused_until_converted(release_dir):
    path, model = release_dir
    ckpt = path / TURBO_CHECKPOINT_FILE
    checkpoint = torch.load(ckpt, weights_only=True)
    torch.save({**checkpoint, "args": argparse.Namespace(lr=1e-4)}, ckpt)
    with pytest.raises(RuntimeError, match=r"(?s)checkpoint-340000.ckpt.*argparse.Namespace.*--convert-trusted"):
        load_turbo_vaed(path)
    converted = convert_turbo_checkpoint(path)
    assert converted == path / TURBO_SAFETENSORS_FILE
    loaded = load_turbo_vaed(path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("module.decoder.conv_out.conv.bias"), r"missing \['conv_out.conv.bias'\]"),
        (lambda s: s.update({"module.decoder.norm_out.weight": torch.ones(8)}), r"unexpected \['norm_out.weight'\]"),
        (lambda s: s.update({"module.decoder.conv_out.conv.bias": torch.zeros(3)}), r"conv_out.conv.bias: \(3,\) != \(12,\)"),
    ],
)
def test_key_mismatches_are_named(release_dir, edit, message):
    path, _ = release_dir
    ckpt = path / TURBO_CHECKPOINT_FILE
    checkpoint = torch.load(ckpt, weights_only=True)
    edit(checkpoint["ema_state_dict"])
    torch.save(checkpoint, ckpt)
    with pytest.raises(ValueError, match=message):
        load_turbo_vaed(path)


def test_checkpoint_without_ema_weights_is_named(release_dir):
    path, _ = release_dir
    torch.save({"state_dict": {}}, path / TURBO_CHECKPOINT_FILE)
    with pytest.raises(KeyError, match="no 'ema_state_dict'"):
        load_turbo_vaed(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=TURBO_CONFIG_FILE):
        load_turbo_vaed(tmp_path)
    (tmp_path / TURBO_CONFIG_FILE).write_text(json.dumps(RELEASE_CONFIG))
    with pytest.raises(FileNotFoundError, match=TURBO_CHECKPOINT_FILE):
        load_turbo_vaed(tmp_path)
