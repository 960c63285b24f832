"""Synthetic talking-face clips with a known audio/video offset.

Two faces whose mouth opening follows the loudness envelope of a speech-like signal
(syllable-rate bursts of voiced buzz plus noise); shifting the mouth track against the
audio by ``shift_frames`` gives a clip whose correct sync offset is known, which is what
the sync metrics are validated on:

* ``talking_face_clip``: a drawn cartoon face, large and upright (every detector finds it);
* ``photo_clip``: a real photograph (scikit-image's astronaut, a dev dependency) moved,
  scaled and tilted by known amounts over its own textured background: the hard cases of
  face tracking (small, tilted, drifting, no face), with the true face box of every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    shown, audio = _mouth_and_speech(num_frames, fps, shift_frames, sample_rate, np.random.default_rng(seed))
    t = np.arange(num_frames) / fps
    dx = head_motion_px * np.sin(2 * np.pi * 0.4 * t)
    dy = 0.6 * head_motion_px * np.sin(2 * np.pi * 0.23 * t + 1.0)
    frames = np.stack([draw_face(height, width, o, x, y) for o, x, y in zip(shown, dx, dy)])
    return SyntheticClip(Video(frames, fps), audio, shift_frames, shown)


def _mouth_and_speech(num_frames: int, fps: float, shift_frames: int, sample_rate: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, Audio]:  # fmt: skip
    """(mouth opening ``[T]`` in [0, 1] shown by video frame t, the clip's speech): frame t
    shows the envelope of audio frame t - shift_frames.

    Audio is generated with ``pad`` extra frames on both sides so every shift in
    [-pad, pad] has real speech, not silence, at the clip edges.
    """
    pad = 20
    if abs(shift_frames) > pad:
        raise ValueError(f"shift_frames must be within ±{pad}; got {shift_frames}")
    total = num_frames + 2 * pad
    sig, env = speech_like_audio(total / fps, sample_rate, rng)
    bounds = np.round(np.arange(total + 1) * sample_rate / fps).astype(int)
    env_frames = np.array([env[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])
    opening = env_frames / max(env_frames.max(), 1e-9)
    shown = opening[pad - shift_frames : pad - shift_frames + num_frames]
    return shown, Audio.from_array(sig[bounds[pad] : bounds[pad + num_frames]], sample_rate)


# ---------------------------------------------------------------- a real photograph, hard cases

PhotoCase = Literal["upright_large", "small", "tilted", "drifting", "no_face"]
PHOTO_CASES: tuple[PhotoCase, ...] = ("upright_large", "small", "tilted", "drifting", "no_face")
PHOTO_FACE_BOX = (182.0, 64.0, 268.0, 172.0)  # astronaut(): hairline to chin, cheek to cheek (px of the 512x512 image)
PHOTO_MOUTH = (223.0, 142.0, 19.0)  # centre x, y and half-width of the mouth (same px)
PHOTO_ROLL_DEG = 2.7  # the photographed head's own tilt: eyes (205, 101)-(246, 103), mouth (201, 139)-(245, 141)


@dataclass(frozen=True)
class PhotoClip(SyntheticClip):
    """A ``photo_clip``: ``face_boxes`` ``[T, 4]`` is the true upright face box (x0, y0, x1, y1)
    per frame (None for ``no_face``), ``roll_deg`` ``[T]`` the head's in-plane tilt (the tilt
    applied plus the photographed head's own), positive clockwise on screen."""

    case: str = ""
    face_boxes: np.ndarray | None = None
    roll_deg: np.ndarray | None = None


def _geometry(case: PhotoCase, t: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Per frame: face height (px), roll (degrees), face centre x, y (px)."""
    u = t / max(t[-1], 1e-9)  # 0 -> 1 over the clip
    wobble = np.sin(2 * np.pi * 0.4 * t)
    if case == "upright_large":
        bob = np.cos(2 * np.pi * 0.23 * t)
        return np.full_like(t, 0.55 * height), 0 * t, width / 2 + 1.5 * wobble, height / 2 + bob
    if case == "small":  # a quarter of the frame height, off centre
        return np.full_like(t, height / 4), 2 * wobble, 0.35 * width + 2 * wobble, 0.45 * height + 0 * t
    if case == "tilted":
        return np.full_like(t, height / 3), 25 + 3 * wobble, width / 2 + 2 * wobble, 0.5 * height + 0 * t
    if case == "drifting":  # the clip: a third of the height, tilted, drifting across a textured background
        return np.full_like(t, height / 3), 20 + 5 * u, (0.3 + 0.4 * u) * width, (0.45 + 0.1 * u) * height
    if case == "no_face":
        return np.full_like(t, 0.55 * height), 0 * t, width / 2 + 0 * t, height / 2 + 0 * t
    raise ValueError(f"case must be one of {PHOTO_CASES}; got {case!r}")


def photo_clip(case: PhotoCase, shift_frames: int = 0, num_frames: int = 48, fps: float = 25.0, height: int = 256,
               width: int = 320, sample_rate: int = 16000, seed: int = 0) -> PhotoClip:  # fmt: skip
    """The astronaut photograph talking: its mouth opens (a dark cavity between the lips) with
    the speech envelope, video lagging audio by ``shift_frames``; the face is placed, scaled and
    tilted per frame as ``case`` says, over the rest of the photograph (mirrored at its edges).

    ``no_face``: the same motion, but framed on the suit below the face, with the pulsing
    cavity drawn there: motion that follows the speech, and no face.
    """
    from skimage.data import astronaut  # dev dependency (pyproject [dev])

    photo = astronaut()
    shown, audio = _mouth_and_speech(num_frames, fps, shift_frames, sample_rate, np.random.default_rng(seed))
    face_h, roll, cx, cy = _geometry(case, np.arange(num_frames) / fps, height, width)
    x0, y0, x1, y1 = PHOTO_FACE_BOX
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + (np.array([0.0, 230.0]) if case == "no_face" else 0.0)
    mouth = np.array(PHOTO_MOUTH[:2]) + (centre - [(x0 + x1) / 2, (y0 + y1) / 2])
    frames, boxes = [], []
    for o, h, r, x, y in zip(shown, face_h, roll, cx, cy):
        src = photo.copy()
        axes = (round(PHOTO_MOUTH[2] * 16), round((1.5 + 9 * o) * 16))  # 1/16 px (shift=4): sub-pixel drawing
        centre_16 = (round(mouth[0] * 16), round(mouth[1] * 16))
        cv2.ellipse(src, centre_16, axes, 0, 0, 360, (45, 12, 18), -1, cv2.LINE_AA, 4)
        s = h / (y1 - y0)
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -float(r), s)  # cv2's + is counter-clockwise
        m[:, 2] += np.array([x, y]) - centre
        frames.append(cv2.warpAffine(src, m, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101))
        half_w, half_h = s * (x1 - x0) / 2, h / 2
        boxes.append([x - half_w, y - half_h, x + half_w, y + half_h])
    video = Video(np.stack(frames), fps)
    truth = None if case == "no_face" else np.array(boxes)
    tilt = None if case == "no_face" else roll + PHOTO_ROLL_DEG
    return PhotoClip(video, audio, shift_frames, shown, case, truth, tilt)


def scrambled(audio: Audio, chunk_s: float = 0.2, seed: int = 1) -> Audio:
    """The same audio with fixed-length chunks randomly permuted (destroys sync, keeps level)."""
    x = audio.mono
    n = max(1, int(chunk_s * audio.sample_rate))
    chunks = [x[i : i + n] for i in range(0, len(x), n)]
    order = np.random.default_rng(seed).permutation(len(chunks))
    return Audio.from_array(np.concatenate([chunks[i] for i in order]), audio.sample_rate)
