import math

import pytest
import torch
from magihuman.configs import build_group
from magihuman.sampling import (
    SR_NOISE_INDEX,
    ImageFirstFrame,
    SamplerConfig,
    SRConfig,
    make_denoise,
    prepare_sr_inputs,
    sample_sr,
    sr_noise_sigma,
    upsample_video_latent,
)


@pytest.fixture
def config() -> SRConfig:
    return build_group("sr", "default")


def test_sr_group_is_the_release_stage(config):
    """configs/sr/default.yaml: 5 UniPC steps in one pass, scale 3.5 with the first 13 frames capped; the
    sampler is required (no Python copy of the group)."""
    assert isinstance(config, SRConfig) and isinstance(config.sampler, SamplerConfig)
    sampler = config.sampler
    assert (sampler.name, sampler.num_steps, sampler.cfg_passes, sampler.shift) == ("unipc_cfg", 5, 1, 5.0)
    assert (sampler.guidance_scale, sampler.late_guidance_scale, sampler.capped_frames) == (3.5, None, 13)
    assert config.noise_index == SR_NOISE_INDEX and config.audio_noise_scale == 0.7
    with pytest.raises(TypeError, match="sampler"):
        SRConfig()


def test_upsample_trilinear_align_corners():
    t, h, w = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), torch.arange(5.0), indexing="ij")
    ramp = (t + 2 * h - w).expand(1, 48, 3, 4, 5)
    up = upsample_video_latent(ramp, (5, 7, 9))
    assert up.shape == (1, 48, 5, 7, 9)
    t2, h2, w2 = torch.meshgrid(
        torch.linspace(0, 2, 5), torch.linspace(0, 3, 7), torch.linspace(0, 4, 9), indexing="ij"
    )
    torch.testing.assert_close(up[0, 0], t2 + 2 * h2 - w2)  # linear data is reproduced, corners kept
    assert upsample_video_latent(ramp[0], (5, 7, 9)).shape == (48, 5, 7, 9)


def test_renoise_statistics(config):
    c, a = 2.0, 1.5
    video, audio = torch.full((1, 48, 4, 32, 32), c), torch.full((1, 501, 64), a)
    sr_video, sr_audio = prepare_sr_inputs(config, video, audio, (4, 32, 32), torch.Generator().manual_seed(0))
    sigma = sr_noise_sigma(220)
    assert abs(sr_video.mean().item() - c * sigma) < 5e-3
    assert abs(sr_video.std().item() - math.sqrt(1 - sigma**2)) < 5e-3
    assert abs(sr_audio.mean().item() - 0.3 * a) < 5e-3
    assert abs(sr_audio.std().item() - 0.7) < 5e-3


def test_sr_refines_video_and_returns_base_audio(config):
    gen = torch.Generator().manual_seed(1)
    base_video, base_audio = torch.randn(1, 4, 3, 2, 2, generator=gen), torch.randn(1, 9, 8, generator=gen)
    target = torch.randn(1, 4, 3, 4, 6, generator=gen)
    image = torch.randn(1, 4, 1, 4, 6, generator=gen)
    seen_audio = []

    def velocity(video, audio, sigma):  # exact velocity toward a single SR target
        seen_audio.append(audio)
        return (video - target) / sigma, audio * 0.5 + 1.0

    video, audio = sample_sr(
        config,
        make_denoise(config.sampler, velocity),
        base_video,
        base_audio,
        (3, 4, 6),
        generator=torch.Generator().manual_seed(2),
        constraints=[ImageFirstFrame(image)],
    )
    assert audio is base_audio
    assert len(seen_audio) == 5 and all(torch.equal(a, seen_audio[0]) for a in seen_audio)
    assert not torch.allclose(seen_audio[0], base_audio)
    assert torch.equal(video[:, :, :1], image)
    torch.testing.assert_close(video[:, :, 1:], target[:, :, 1:], atol=1e-5, rtol=0)


def test_sr_is_seeded(config):
    velocity = lambda v, a, s: (v * 0.5, a)  # noqa: E731
    base_video, base_audio = torch.ones(1, 4, 2, 2, 2), torch.ones(1, 3, 8)

    def run(seed):
        return sample_sr(config, velocity, base_video, base_audio, (2, 4, 4), generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))
