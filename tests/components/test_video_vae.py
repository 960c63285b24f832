"""Wan2.2 video VAE wrapper: strides, normalization, and both checkpoint layouts."""

import pytest
import torch

from magihuman.components import WanVideoVAE
from magihuman.components.tiny import tiny_video_vae
from magihuman.components.video_vae import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    wan22_config_from_state_dict,
    wan22_to_original_state_dict,
)


@pytest.fixture(scope="module")
def clip():
    """About 1 s of video (25 frames = 4*6 + 1) at a small frame size."""
    return torch.rand(3, 25, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_encode_decode_shapes_at_documented_strides(tiny_components, clip):
    vae = tiny_components.video_vae
    latents = vae.encode(clip)
    assert latents.shape == (48, 7, 2, 3) == vae.geometry.latent_shape(25, 32, 48)
    assert latents.dtype == torch.float32
    pixels = vae.decode(latents)
    assert pixels.shape == clip.shape and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert vae.geometry.num_frames(7) == 25


def test_single_image_encodes_to_one_latent_frame(tiny_components):
    latents = tiny_components.video_vae.encode(torch.zeros(3, 1, 32, 32))
    assert latents.shape == (48, 1, 2, 2)


def test_latents_are_normalized_posterior_mean(tiny_components, clip):
    vae = tiny_components.video_vae
    with torch.no_grad():
        mu = vae.model.encode(clip[None]).latent_dist.mode()[0]
    mean = torch.tensor(WAN22_LATENTS_MEAN).view(-1, 1, 1, 1)
    std = torch.tensor(WAN22_LATENTS_STD).view(-1, 1, 1, 1)
    torch.testing.assert_close(vae.encode(clip), (mu - mean) / std)


@pytest.mark.parametrize("shape", [(3, 24, 32, 32), (3, 25, 30, 32), (1, 25, 32, 32)])
def test_bad_pixel_shapes_are_rejected(tiny_components, shape):
    with pytest.raises(ValueError):
        tiny_components.video_vae.encode(torch.zeros(shape))


def test_original_key_names_round_trip():
    model = tiny_video_vae()
    original = wan22_to_original_state_dict(model)
    assert "encoder.downsamples.1.downsamples.1.time_conv.weight" in original  # resampler after 1 resnet
    assert "decoder.upsamples.0.upsamples.2.resample.1.weight" in original  # decoder blocks hold 2 resnets
    assert "decoder.head.2.weight" in original and "conv1.weight" in original
    config = wan22_config_from_state_dict(original)
    for key in ("base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample"):
        assert config[key] == model.config[key], key
    assert (config["scale_factor_temporal"], config["scale_factor_spatial"]) == (4, 16)


def test_diffusers_layout_loads_too(tmp_path):
    model = tiny_video_vae()
    model.save_pretrained(tmp_path / "vae")
    loaded = WanVideoVAE.from_pretrained(tmp_path)
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.model.state_dict().items())


def test_missing_checkpoint_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="Wan2.2_VAE.pth"):
        WanVideoVAE.from_pretrained(tmp_path)
