"""Synthetic talking-face clips with a known audio/video offset.

A drawn cartoon face (skin ellipse, hair, brows, eyes, nose, mouth) that OpenCV's Haar
frontal-face cascade detects, whose mouth opening follows the loudness envelope of a
speech-like signal (syllable-rate bursts of voiced buzz plus noise). Shifting the mouth
track against the audio by ``shift_frames`` gives a clip whose correct sync offset is
known, which is what the sync metrics are validated on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import butter, sosfilt

from .io import Audio, Video


@dataclass(frozen=True)
class SyntheticClip:
    """A clip whose video lags its audio by ``shift_frames`` (negative: video leads)."""

    video: Video
    audio: Audio
    shift_frames: int
    mouth_opening: np.ndarray  # [T] in [0, 1], what the mouth shows per frame


def speech_like_audio(duration_s: float, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(signal, envelope) of syllable bursts at ~4-5 Hz with pauses; both at ``sample_rate``."""
    n = int(round(duration_s * sample_rate))
    env = np.zeros(n)
    t = rng.uniform(0.02, 0.1)
    while t < duration_s:
        dur = rng.uniform(0.1, 0.26)
        a, m = int(t * sample_rate), int(dur * sample_rate)
        b = min(n, a + m)
        if b > a:
            env[a:b] = rng.uniform(0.45, 1.0) * np.hanning(m)[: b - a]
        t += dur + (rng.uniform(0.25, 0.45) if rng.random() < 0.15 else rng.uniform(0.03, 0.14))
    time = np.arange(n) / sample_rate
    f0 = 120 + 15 * np.sin(2 * np.pi * 0.7 * time)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    noise = sosfilt(butter(4, [300, 3400], "bandpass", fs=sample_rate, output="sos"), rng.standard_normal(n))
    carrier = voiced / np.abs(voiced).max() + 0.5 * noise / np.abs(noise).max()
    sig = env * carrier
    return (0.5 * sig / np.abs(sig).max()).astype(np.float32), env


def draw_face(height: int, width: int, mouth_open: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """One RGB frame of the cartoon face, mouth opening in [0, 1], offset by (dx, dy) px."""
    s = min(height / 256, width / 448) if width >= height * 1.2 else height / 256
    img = np.full((height, width, 3), (110, 90, 70), np.uint8)
    cx, cy = width / 2 + dx, height / 2 + dy

    def p(x: float, y: float) -> tuple[int, int]:
        return int(round((cx + x * s) * 16)), int(round((cy + y * s) * 16))

    def ax(a: float, b: float) -> tuple[int, int]:
        return int(round(a * s * 16)), int(round(b * s * 16))

    kw = {"lineType": cv2.LINE_AA, "shift": 4}
    cv2.ellipse(img, p(0, -10), ax(76, 92), 0, 180, 360, (60, 40, 40), -1, **kw)  # hair
    cv2.ellipse(img, p(0, 0), ax(70, 92), 0, 0, 360, (215, 180, 150), -1, **kw)  # skin
    for side in (-1, 1):
        cv2.ellipse(img, p(side * 28, -38), ax(17, 4), 0, 0, 360, (50, 40, 40), -1, **kw)  # brow
        cv2.ellipse(img, p(side * 28, -22), ax(13, 7), 0, 0, 360, (245, 245, 245), -1, **kw)  # eye
        cv2.circle(img, p(side * 28, -22), int(round(6 * s * 16)), (30, 30, 30), -1, **kw)  # pupil
    cv2.line(img, p(0, -15), p(-6, 18), (175, 140, 110), max(1, round(3 * s)), cv2.LINE_AA)  # nose
    cv2.ellipse(img, p(0, 20), ax(10, 4), 0, 0, 360, (175, 140, 110), -1, **kw)
    cv2.ellipse(img, p(0, 48), ax(26, 3 + 16 * float(np.clip(mouth_open, 0, 1))), 0, 0, 360, (120, 30, 40), -1, **kw)
    return cv2.GaussianBlur(img, (5, 5), 1.2)


def talking_face_clip(
    num_frames: int = 75,
    fps: float = 25.0,
    height: int = 160,
    width: int = 224,
    shift_frames: int = 0,
    sample_rate: int = 16000,
    head_motion_px: float = 1.5,
    seed: int = 0,
) -> SyntheticClip:
    """A clip where video frame t shows the mouth for audio frame t - shift_frames.

    Audio is generated with ``pad`` extra frames on both sides so every shift in
    [-pad, pad] has real speech, not silence, at the clip edges.
    """
    rng = np.random.default_rng(seed)
    pad = 20
    if abs(shift_frames) > pad:
        raise ValueError(f"shift_frames must be within ±{pad}; got {shift_frames}")
    spf = sample_rate / fps
    total = num_frames + 2 * pad
    sig, env = speech_like_audio(total / fps, sample_rate, rng)
    bounds = np.round(np.arange(total + 1) * spf).astype(int)
    env_frames = np.array([env[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])
    opening = env_frames / max(env_frames.max(), 1e-9)
    shown = opening[pad - shift_frames : pad - shift_frames + num_frames]
    t = np.arange(num_frames) / fps
    dx = head_motion_px * np.sin(2 * np.pi * 0.4 * t)
    dy = 0.6 * head_motion_px * np.sin(2 * np.pi * 0.23 * t + 1.0)
    frames = np.stack([draw_face(height, width, o, x, y) for o, x, y in zip(shown, dx, dy)])
    clip_audio = sig[bounds[pad] : bounds[pad + num_frames]]
    return SyntheticClip(Video(frames, fps), Audio.from_array(clip_audio, sample_rate), shift_frames, shown)


def scrambled(audio: Audio, chunk_s: float = 0.2, seed: int = 1) -> Audio:
    """The same audio with fixed-length chunks randomly permuted (destroys sync, keeps level)."""
    x = audio.mono
    n = max(1, int(chunk_s * audio.sample_rate))
    chunks = [x[i : i + n] for i in range(0, len(x), n)]
    order = np.random.default_rng(seed).permutation(len(chunks))
    return Audio.from_array(np.concatenate([chunks[i] for i in order]), audio.sample_rate)
