"""Audio checks on signals with known loudness, clipping and silence."""

from __future__ import annotations

import numpy as np
import pytest

from magihuman.eval.audio_checks import audio_checks, integrated_loudness
from magihuman.eval.io import Audio


def _sine(amp: float, seconds: float = 3.0, fs: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return (amp * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


@pytest.mark.parametrize("fs", [48000, 16000])
def test_bs1770_reference_sine(fs):
    """BS.1770: a 0 dBFS 1 kHz sine reads -3.01 LUFS; -6 dB amplitude reads -9.03."""
    assert integrated_loudness(Audio.from_array(_sine(1.0, fs=fs), fs)) == pytest.approx(-3.01, abs=0.1)
    assert integrated_loudness(Audio.from_array(_sine(0.5, fs=fs), fs)) == pytest.approx(-9.03, abs=0.1)


def test_levels_clipping_silence_duration():
    fs = 16000
    x = np.concatenate([np.clip(_sine(2.0, 1.0, fs), -1, 1), np.zeros(fs, np.float32)])
    c = audio_checks(Audio.from_array(x, fs), video_duration_s=2.5, video_fps=25)
    assert c.sample_rate == fs and c.channels == 1
    assert c.duration_s == pytest.approx(2.0)
    assert c.duration_diff_s == pytest.approx(-0.5) and c.duration_matches is False
    assert c.silence_ratio == pytest.approx(0.5)
    assert 0.3 < c.clipping_ratio < 0.5  # a 2x sine clipped to ±1 sits at the rails ~2/3 of the time; half is silence
    assert c.peak_dbfs == pytest.approx(0.0, abs=1e-3)


def test_rms_dbfs_and_matching_duration():
    c = audio_checks(Audio.from_array(_sine(0.5, 2.0, 16000), 16000), video_duration_s=2.0, video_fps=25)
    assert c.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=1e-3)
    assert c.duration_matches is True and c.clipping_ratio == 0.0 and c.silence_ratio == 0.0


def test_too_short_for_loudness_is_none():
    assert integrated_loudness(Audio.from_array(_sine(0.5, 0.2, 16000), 16000)) is None
