"""PSNR, SSIM, LPIPS, temporal consistency and flicker on inputs with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from magihuman.eval.errors import EvalInputError, WeightsUnavailable
from magihuman.eval.io import Video
from magihuman.eval.perceptual import load_lpips, lpips_distance
from magihuman.eval.quality import flicker, psnr, psnr_frame, ssim, ssim_frame, temporal_consistency


@pytest.fixture(scope="module")
def short(talking_clip) -> Video:
    return Video(talking_clip.video.frames[:4], 25.0)


@pytest.fixture(scope="module")
def random_lpips():
    return load_lpips(random_trunk=True)


def _blurred(v: Video, sigma: float) -> Video:
    return Video(np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in v.frames]), v.fps)


def _noisy(v: Video, std: float) -> Video:
    rng = np.random.default_rng(0)
    return Video(np.clip(v.frames + rng.normal(0, std, v.frames.shape), 0, 255).astype(np.uint8), v.fps)


def test_identical_videos(short, random_lpips):
    assert math.isinf(psnr(short, short).mean)
    assert ssim(short, short).mean == pytest.approx(1.0)
    assert lpips_distance(short, short, random_lpips, random_trunk=True).mean == 0.0


def test_psnr_known_value():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert psnr_frame(a, b) == pytest.approx(10 * math.log10(255**2 / 100))


def test_ssim_matches_skimage_golden():
    """Golden from skimage 0.26 structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)."""
    y = np.arange(48 * 64 * 3).reshape(48, 64, 3)
    a = ((y * 37) % 251).astype(np.uint8)
    b = ((y * 37 + (y // 7) % 13) % 251).astype(np.uint8)
    assert ssim_frame(a, b) == pytest.approx(0.867022110444703, abs=1e-9)


@pytest.mark.parametrize("degrade,levels", [(_blurred, [0.5, 1, 2, 4]), (_noisy, [2, 5, 10, 20])])
def test_degradation_is_monotonic(short, random_lpips, degrade, levels):
    """More blur/noise: SSIM and PSNR fall, LPIPS (random trunk, plumbing only) rises."""
    s, p, lp = [], [], []
    for level in levels:
        d = degrade(short, level)
        s.append(ssim(d, short).mean)
        p.append(psnr(d, short).mean)
        r = lpips_distance(d, short, random_lpips, random_trunk=True)
        assert r.name == "lpips_random_trunk"
        lp.append(r.mean)
    assert all(x > y for x, y in zip(s, s[1:]))
    assert all(x > y for x, y in zip(p, p[1:]))
    assert all(x < y for x, y in zip(lp, lp[1:]))


def test_lpips_without_alexnet_weights_is_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailable, match="cannot download them offline"):
        load_lpips(tmp_path / "alexnet-owt-7be5be79.pth")


def test_lpips_loads_trunk_from_a_torchvision_checkpoint(tmp_path, short):
    """The real-weights path: a torchvision AlexNet state dict lands in LPIPS's 5 slices."""
    from torchvision.models import alexnet

    torch.manual_seed(1)
    net = alexnet()
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(net.state_dict(), path)
    model = load_lpips(path)
    assert torch.equal(model.net.slice1[0].weight, net.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, net.features[10].bias)
    r = lpips_distance(short, short, model, random_trunk=False)
    assert r.name == "lpips" and r.mean == 0.0


def test_reference_mismatch_errors(short):
    with pytest.raises(EvalInputError, match="4 frames but the reference has 3"):
        psnr(short, Video(short.frames[:3], 25.0))
    with pytest.raises(EvalInputError, match="expected equal sizes"):
        ssim(short, Video(short.frames[:, :80], 25.0))


def test_temporal_consistency_static_and_moving():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (0, 0), 2)
    static = Video(np.stack([base] * 4), 25.0)
    assert temporal_consistency(static).warp_error < 0.01  # sub-pixel flow noise only
    moving = Video(np.stack([np.roll(base, 2 * t, axis=1) for t in range(4)]), 25.0)
    tc = temporal_consistency(moving)
    assert tc.warp_error < 0.3 * tc.raw_difference  # flow explains a pure translation
    flashing = Video(np.stack([np.clip(base.astype(int) + 40 * (t % 2), 0, 255).astype(np.uint8) for t in range(4)]), 25.0)
    assert temporal_consistency(flashing).warp_error > tc.warp_error


def test_flicker_known_luma_steps():
    frames = np.stack([np.full((8, 8, 3), v, np.uint8) for v in [100, 110, 100, 130]])
    f = flicker(Video(frames, 25.0))
    assert f.mean_abs_luma_change == pytest.approx((10 + 10 + 30) / 3, rel=1e-5)
    assert f.max_abs_luma_change == pytest.approx(30, rel=1e-5)
