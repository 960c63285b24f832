"""Weights-free sync recovers known shifts of the synthetic talking face."""

from __future__ import annotations

import numpy as np
import pytest

from magihuman.eval.api import score
from magihuman.eval.av_sync import av_sync
from magihuman.eval.errors import MetricUnavailable
from magihuman.eval.face import MIN_FACE_DETECTION_RATE, track_face
from magihuman.eval.io import Video, read_audio, read_video, write_video
from magihuman.eval.synthetic import scrambled

SHIFTS = list(range(-6, 7))


@pytest.fixture(scope="module")
def results(make_clip):
    """The head moves the same way in every shifted clip (only the mouth differs), so the in-sync
    clip's face track serves all 13 (tracking itself is tested on its own and in test_eval_face)."""
    track = track_face(make_clip(0).video.frames)
    return {k: av_sync(make_clip(k).video, make_clip(k).audio, track=track) for k in SHIFTS}


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_detectors_find_the_drawn_face(talking_clip, detector):
    track = track_face(talking_clip.video.frames, detector)
    assert track.source == detector
    assert track.detection_rate > 0.95


@pytest.mark.parametrize("k", SHIFTS)
def test_recovers_shift_exactly(results, k):
    r = results[k]
    assert r.offset_frames == k
    assert r.offset_ms == pytest.approx(k * 40.0)
    assert r.face_detection_rate > 0.95
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


def _hide_face(frames: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Noise over the upper rows (eyes) of the chosen frames: the mouth still moves, no face is found."""
    frames = frames.copy()
    rng = np.random.default_rng(0)
    frames[which, :100] = rng.integers(0, 10, size=frames[which, :100].shape, dtype=np.uint8)
    return frames


@pytest.mark.parametrize("hidden_share", [1.0, 0.7])
def test_no_lip_sync_number_without_a_face(make_clip, hidden_share):
    """Below the detection-rate threshold av_sync says why instead of giving an offset."""
    c = make_clip(2)
    which = np.arange(c.video.num_frames) < round(hidden_share * c.video.num_frames)
    video = Video(_hide_face(c.video.frames, which), c.video.fps)
    rate = track_face(video.frames).detection_rate
    assert rate < MIN_FACE_DETECTION_RATE
    with pytest.raises(MetricUnavailable, match=f"av_sync needs a face: one was detected in {rate:.0%} of the frames"):
        av_sync(video, c.audio)
    entry = score(video.frames, audio=c.audio, fps=video.fps,
                  metrics=["av_sync"])["metrics"]["av_sync"]  # fmt: skip
    assert entry["available"] is False and "below the 50% threshold" in entry["reason"]
    assert "offset_frames" not in entry


def test_noise_frames_get_no_lip_sync_number(make_clip):
    c = make_clip(0)
    noise = np.random.default_rng(1).integers(0, 256, size=c.video.frames.shape, dtype=np.uint8)
    entry = score(noise, audio=c.audio, fps=c.video.fps,
                  metrics=["av_sync"])["metrics"]["av_sync"]  # fmt: skip
    assert entry == {"available": False, "reason": entry["reason"], "elapsed_s": entry["elapsed_s"],
                     "face_detector": "mtcnn"}  # fmt: skip
    assert "detected in 0% of the frames" in entry["reason"]
