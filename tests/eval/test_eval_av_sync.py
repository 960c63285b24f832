"""Weights-free sync recovers known shifts of the synthetic talking face."""

from __future__ import annotations

import numpy as np
import pytest

from eval.av_sync import av_sync
from eval.face import track_face
from eval.io import Video, read_audio, read_video, write_video
from eval.synthetic import scrambled

SHIFTS = list(range(-6, 7))


@pytest.fixture(scope="module")
def results(make_clip):
    return {k: av_sync(make_clip(k).video, make_clip(k).audio) for k in SHIFTS}


def test_haar_detects_the_drawn_face(talking_clip):
    track = track_face(talking_clip.video.frames)
    assert track.source == "haar"
    assert track.detection_rate > 0.95


@pytest.mark.parametrize("k", SHIFTS)
def test_recovers_shift_exactly(results, k):
    r = results[k]
    assert r.offset_frames == k
    assert r.offset_ms == pytest.approx(k * 40.0)
    assert r.region == "face_lower_half"
    assert r.confidence > 0.6


def test_scrambled_audio_has_low_confidence(results, make_clip):
    base = make_clip(0)
    low = av_sync(base.video, scrambled(base.audio))
    assert low.confidence < 0.4
    assert low.confidence < 0.5 * min(r.confidence for r in results.values())


def test_search_covers_31_lags(results):
    r = results[0]
    assert r.lags == list(range(-15, 16))
    assert len(r.correlations) == 31


def test_survives_h264_aac_round_trip(tmp_path, make_clip):
    c = make_clip(4)
    path = tmp_path / "k4.mp4"
    write_video(path, c.video, c.audio, crf=28)
    r = av_sync(read_video(path), read_audio(path))
    assert r.offset_frames == 4


def test_falls_back_to_lower_centre_without_a_face(make_clip):
    c = make_clip(2)
    rng = np.random.default_rng(0)
    # keep only the mouth band visible: no eyes, so no face, but the motion is still there
    frames = c.video.frames.copy()
    frames[:, :100] = rng.integers(0, 10, size=frames[:, :100].shape, dtype=np.uint8)
    r = av_sync(Video(frames, c.video.fps), c.audio)
    assert r.region == "frame_lower_centre"
    assert r.face_detection_rate == 0.0
    assert r.offset_frames == 2
