"""Sanity statistics of a generated soundtrack: length, clipping, silence, loudness.

Loudness is given twice: plain RMS in dBFS, and an ITU-R BS.1770-4 integrated loudness
("LUFS, approx."): K-weighting (the 1.5 kHz +4 dB shelf and 38 Hz high-pass, designed for
the actual sample rate with the RBJ biquad formulas, as pyloudnorm does, so it is within a
few hundredths of a dB of the standard's 48 kHz coefficients), 400 ms blocks with 75%
overlap, a -70 LUFS absolute gate and a -10 LU relative gate. Channels weigh 1 each
(no surround weighting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from .io import Audio

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
SILENCE_DBFS = -50.0  # a 20 ms window quieter than this is silence
SILENCE_WINDOW_S = 0.020


@dataclass(frozen=True)
class AudioChecks:
    sample_rate: int
    channels: int
    duration_s: float
    video_duration_s: float | None
    duration_diff_s: float | None  # audio minus video
    duration_matches: bool | None  # within one video frame
    clipping_ratio: float
    silence_ratio: float
    rms_dbfs: float
    peak_dbfs: float
    lufs_approx: float | None  # None when shorter than one 400 ms block or fully gated


def _dbfs(x: float) -> float:
    return float(20 * np.log10(x)) if x > 0 else float("-inf")


def _biquad_high_shelf(fs: float, fc: float = 1500.0, gain_db: float = 4.0, q: float = 1 / np.sqrt(2)):
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * fc / fs
    alpha = np.sin(w0) / (2 * q)
    cw, sa = np.cos(w0), 2 * np.sqrt(a) * alpha
    b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa)]
    den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa]
    return np.array(b) / den[0], np.array(den) / den[0]


def _biquad_high_pass(fs: float, fc: float = 38.0, q: float = 0.5):
    w0 = 2 * np.pi * fc / fs
    alpha, cw = np.sin(w0) / (2 * q), np.cos(w0)
    b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
    den = [1 + alpha, -2 * cw, 1 - alpha]
    return np.array(b) / den[0], np.array(den) / den[0]


def k_weight(samples: np.ndarray, fs: float) -> np.ndarray:
    """BS.1770 K-weighting of ``[channels, N]`` samples."""
    y = lfilter(*_biquad_high_shelf(fs), samples.astype(np.float64), axis=-1)
    return lfilter(*_biquad_high_pass(fs), y, axis=-1)


def integrated_loudness(audio: Audio) -> float | None:
    """Gated BS.1770 loudness in LUFS, or None for audio under 400 ms / entirely below the gate."""
    fs = audio.sample_rate
    block, step = int(0.4 * fs), int(0.1 * fs)
    n = audio.samples.shape[1]
    if n < block:
        return None
    z = k_weight(audio.samples, fs) ** 2
    starts = np.arange(0, n - block + 1, step)
    cs = np.concatenate([np.zeros((z.shape[0], 1)), np.cumsum(z, axis=1)], axis=1)
    power = ((cs[:, starts + block] - cs[:, starts]) / block).sum(axis=0)  # channel weights 1
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(power)
    kept = power[loud > -70.0]
    if len(kept) == 0:
        return None
    relative_gate = -0.691 + 10 * np.log10(kept.mean()) - 10.0
    kept = power[(loud > -70.0) & (loud > relative_gate)]
    return float(-0.691 + 10 * np.log10(kept.mean()))


def silence_ratio(audio: Audio) -> float:
    """Fraction of 20 ms windows of the mono mix below ``SILENCE_DBFS`` RMS."""
    x = audio.mono.astype(np.float64)
    w = max(1, int(SILENCE_WINDOW_S * audio.sample_rate))
    count = max(1, len(x) // w)
    frames = np.pad(x, (0, max(0, count * w - len(x))))[: count * w].reshape(count, w)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float((rms < 10 ** (SILENCE_DBFS / 20)).mean())


def audio_checks(audio: Audio, video_duration_s: float | None = None, video_fps: float | None = None) -> AudioChecks:
    """All audio statistics; the duration comparison needs the video's duration and fps."""
    s = audio.samples.astype(np.float64)
    diff = None if video_duration_s is None else audio.duration_s - video_duration_s
    tol = 1.0 / video_fps if video_fps else 0.04
    return AudioChecks(
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        duration_s=audio.duration_s,
        video_duration_s=video_duration_s,
        duration_diff_s=diff,
        duration_matches=None if diff is None else bool(abs(diff) <= tol + 1e-9),
        clipping_ratio=float((np.abs(s) >= CLIP_LEVEL).any(axis=0).mean()),
        silence_ratio=silence_ratio(audio),
        rms_dbfs=_dbfs(float(np.sqrt((audio.mono.astype(np.float64) ** 2).mean()))),
        peak_dbfs=_dbfs(float(np.abs(s).max())),
        lufs_approx=integrated_loudness(audio),
    )
