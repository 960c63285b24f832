"""Shared synthetic clips for the eval tests (cached: drawing and encoding cost time)."""

from __future__ import annotations

from functools import lru_cache

import pytest

from magihuman.eval.synthetic import SyntheticClip, talking_face_clip


@lru_cache(maxsize=None)
def _clip(shift: int = 0, num_frames: int = 75, seed: int = 0) -> SyntheticClip:
    return talking_face_clip(num_frames=num_frames, shift_frames=shift, seed=seed)


@pytest.fixture(scope="session")
def make_clip():
    """``make_clip(shift, num_frames=75, seed=0)``: 25 fps 224x160 clip, video lagging by ``shift``."""
    return _clip


@pytest.fixture(scope="session")
def talking_clip() -> SyntheticClip:
    """3 s, 25 fps, 224x160, audio and video in sync."""
    return _clip(0)


@pytest.fixture(scope="session")
def talking_mp4(tmp_path_factory, talking_clip) -> str:
    """The in-sync clip written as H.264 + AAC."""
    from magihuman.eval.io import write_video

    path = tmp_path_factory.mktemp("clips") / "talking.mp4"
    write_video(path, talking_clip.video, talking_clip.audio)
    return str(path)
