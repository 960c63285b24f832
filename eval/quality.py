"""Pixel-level video quality: PSNR, SSIM, temporal consistency and flicker.

PSNR and SSIM compare against a reference with the same frame count and size, per frame,
then average over frames. SSIM is Wang et al. (2004) with an 11x11 Gaussian window
(sigma 1.5), K1=0.01, K2=0.03, L=255, population covariances, computed per RGB channel and
averaged, with the 5-pixel border that the window cannot fully cover left out; this
matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import EvalInputError
from .io import Video

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5), skimage's truncate=3.5
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0


@dataclass(frozen=True)
class FrameAverage:
    """A per-frame score averaged over frames, with the spread for context."""

    mean: float
    min: float
    max: float
    num_frames: int

    @classmethod
    def of(cls, values: np.ndarray) -> "FrameAverage":
        return cls(float(np.mean(values)), float(np.min(values)), float(np.max(values)), int(len(values)))


def check_same_shape(video: Video, reference: Video) -> None:
    if video.num_frames != reference.num_frames:
        raise EvalInputError(
            f"video has {video.num_frames} frames but the reference has {reference.num_frames}; "
            "reference metrics compare frame by frame and expect equal counts"
        )
    if video.size != reference.size:
        raise EvalInputError(
            f"video frames are {video.size[1]}x{video.size[0]} but the reference's are "
            f"{reference.size[1]}x{reference.size[0]}; expected equal sizes"
        )


def psnr_frame(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(DATA_RANGE**2 / mse)


def psnr(video: Video, reference: Video) -> FrameAverage:
    """Mean per-frame PSNR in dB; inf when every frame is identical."""
    check_same_shape(video, reference)
    return FrameAverage.of(np.array([psnr_frame(a, b) for a, b in zip(video.frames, reference.frames)]))


def _blur(x: np.ndarray) -> np.ndarray:
    k = 2 * SSIM_RADIUS + 1
    return cv2.GaussianBlur(x, (k, k), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim_frame(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of one image pair ``[H, W, C]`` (or ``[H, W]``), channels averaged."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    mx, my = _blur(x), _blur(y)
    vx = _blur(x * x) - mx * mx
    vy = _blur(y * y) - my * my
    cxy = _blur(x * y) - mx * my
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = SSIM_RADIUS
    return float(s[r:-r, r:-r].mean())


def ssim(video: Video, reference: Video) -> FrameAverage:
    check_same_shape(video, reference)
    return FrameAverage.of(np.array([ssim_frame(a, b) for a, b in zip(video.frames, reference.frames)]))


def _luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma ``[T, H, W]`` float32 in 0..255."""
    return (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


@dataclass(frozen=True)
class TemporalConsistency:
    """Mean abs error (0..255) after warping frame t onto t+1 with Farneback flow (lower is better)."""

    warp_error: float
    raw_difference: float  # the same error without motion compensation, for scale
    num_pairs: int


def temporal_consistency(video: Video) -> TemporalConsistency:
    """Motion-compensated frame-to-frame error: what flow cannot explain is temporal noise."""
    if video.num_frames < 2:
        raise EvalInputError("temporal_consistency needs at least 2 frames")
    gray = _luma(video.frames)
    h, w = gray.shape[1:]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    warp, raw = [], []
    for t in range(video.num_frames - 1):
        prev, nxt = gray[t], gray[t + 1]
        # flow from t+1 back to t: pixel p of t+1 came from p + flow[p] in t
        flow = cv2.calcOpticalFlowFarneback(nxt, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        warped = cv2.remap(prev, grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warp.append(float(np.abs(warped - nxt).mean()))
        raw.append(float(np.abs(prev - nxt).mean()))
    return TemporalConsistency(float(np.mean(warp)), float(np.mean(raw)), len(warp))


@dataclass(frozen=True)
class Flicker:
    """Mean |mean luma(t+1) - mean luma(t)| in 0..255, and its largest single jump."""

    mean_abs_luma_change: float
    max_abs_luma_change: float


def flicker(video: Video) -> Flicker:
    """Global brightness instability between consecutive frames (motion barely moves it)."""
    if video.num_frames < 2:
        raise EvalInputError("flicker needs at least 2 frames")
    means = _luma(video.frames).reshape(video.num_frames, -1).mean(axis=1)
    jumps = np.abs(np.diff(means))
    return Flicker(float(jumps.mean()), float(jumps.max()))
