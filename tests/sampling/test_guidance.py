import pytest
import torch

from magihuman.sampling import SamplerConfig, cfg_denoise, make_denoise, video_guidance_scale

T = 16


def text_velocity(texts: torch.Tensor, calls: list):
    """Toy DiT: row r of the batch is conditioned on texts[r]; records the batch size of every call."""

    def velocity(video, audio, sigma):
        calls.append(video.shape[0])
        tv = texts[:, : video.shape[1]].reshape(-1, video.shape[1], 1, 1, 1)
        ta = texts[:, : audio.shape[2]].reshape(-1, 1, audio.shape[2])
        return torch.tanh(video) * 0.7 + tv * sigma, audio * 0.3 - ta * sigma

    return velocity


def unit_velocity(video, audio, sigma):
    """cond rows return 1, uncond rows 0, so the guided output equals the guidance scale."""
    ones = torch.tensor([1.0, 0.0])
    return ones.view(2, 1, 1, 1, 1).expand_as(video).clone(), ones.view(2, 1, 1).expand_as(audio).clone()


def test_batched_cfg_equals_two_separate_calls():
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    video, audio = torch.randn(1, 4, T, 2, 3, generator=gen), torch.randn(1, 5, 6, generator=gen)
    calls = []
    denoise = cfg_denoise(text_velocity(torch.stack([cond, uncond]), calls), scale=5.0, audio_scale=4.0)
    for sigma in (0.9, 0.3):
        gv, ga = denoise(video, audio, sigma)
        cv, ca = text_velocity(cond[None], [])(video, audio, sigma)
        uv, ua = text_velocity(uncond[None], [])(video, audio, sigma)
        s = 5.0 if sigma > 0.5 else 2.0
        torch.testing.assert_close(gv, uv + s * (cv - uv), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ga, ua + 4.0 * (ca - ua), atol=1e-6, rtol=1e-6)
    assert calls == [2, 2], "both passes must run as one batched call per step"


def test_video_scale_switches_at_timestep_500_audio_does_not():
    denoise = cfg_denoise(unit_velocity, scale=5.0, audio_scale=7.0)
    video, audio = torch.zeros(1, 2, 3, 1, 1), torch.zeros(1, 4, 2)
    for sigma, expected in [(0.999, 5.0), (0.502, 5.0), (0.501, 5.0), (0.5009, 2.0), (0.5, 2.0), (0.1, 2.0)]:
        gv, ga = denoise(video, audio, sigma)
        assert torch.all(gv == expected), sigma
        assert torch.all(ga == 7.0), sigma


def test_first_13_frames_capped_for_sr():
    denoise = cfg_denoise(unit_velocity, scale=3.5, audio_scale=1.0, late_scale=None, capped_frames=13)
    video, audio = torch.zeros(1, 2, T, 2, 2), torch.zeros(1, 4, 2)
    for sigma in (0.99, 0.2):  # no timestep switch for SR
        gv, _ = denoise(video, audio, sigma)
        assert torch.all(gv[:, :, :13] == 2.0) and torch.all(gv[:, :, 13:] == 3.5)


def test_video_guidance_scale_helper():
    s = video_guidance_scale(800, T, scale=1.5, capped_frames=13)
    assert s.shape == (T, 1, 1) and torch.all(s == 1.5)  # cap is min(cap, scale)
    s = video_guidance_scale(400, T, scale=5.0, late_scale=2.0, capped_frames=3, frame_cap=1.0)
    assert torch.all(s[:3] == 1.0) and torch.all(s[3:] == 2.0)


def test_make_denoise_follows_config():
    velocity = text_velocity(torch.randn(1, 8), [])
    assert make_denoise(SamplerConfig(name="dmd", cfg_passes=1), velocity) is velocity
    calls = []
    guided = make_denoise(SamplerConfig(cfg_passes=2), text_velocity(torch.randn(2, 8), calls))
    v, a = guided(torch.zeros(1, 4, 3, 2, 2), torch.zeros(1, 5, 6), 0.7)
    assert v.shape == (1, 4, 3, 2, 2) and a.shape == (1, 5, 6) and calls == [2]


@pytest.mark.parametrize("batch", [1, 3])
def test_cfg_keeps_batch(batch):
    denoise = cfg_denoise(lambda v, a, s: (v * 2, a * 2), scale=5.0, audio_scale=5.0)
    v, a = denoise(torch.ones(batch, 2, 3, 1, 1), torch.ones(batch, 4, 2), 0.9)
    assert v.shape[0] == a.shape[0] == batch
