"""Weights-free audio/visual sync: mouth motion vs. speech-envelope change.

Mouth motion is the mean absolute frame difference inside the mouth region (lower half of
the tracked face); its audio counterpart is the absolute frame-to-frame change of the RMS
envelope computed at the video frame rate. Both are "change" signals: the mouth moves when
loudness rises (opening) and falls (closing), so motion energy lines up with |d RMS/dt|
rather than with RMS itself. We take the Pearson correlation at every lag in ±max_shift
frames and report the best lag, with the same sign convention as SyncNet: a positive
offset means video frame t matches audio frame t - offset (the video lags the audio).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import librosa
import numpy as np

from .errors import EvalInputError
from .face import FaceTrack, mouth_region, require_face, track_face, upright
from .io import Audio, Video, resample_audio

MOUTH_SIZE = (64, 32)  # (w, h) the mouth crop is resized to, so motion is resolution-free
MIN_OVERLAP = 10  # fewest frames a lag's correlation may be computed on


@dataclass(frozen=True)
class AVSyncResult:
    offset_frames: int
    offset_ms: float
    peak_correlation: float
    confidence: float  # peak correlation minus the median over all lags
    peak_zscore: float  # (peak - mean) / std over all lags
    lags: list[int]
    correlations: list[float]
    face_detection_rate: float


def mouth_motion(video: Video, track: FaceTrack) -> np.ndarray:
    """``[T]`` motion energy; entry t compares frames t-1 and t (entry 0 is 0) in frame t's
    mouth region, both frames de-rotated by frame t's roll."""
    motion = np.zeros(video.num_frames)
    for t in range(1, video.num_frames):
        box, roll = track.boxes[t], track.roll[t]
        region = mouth_region(box, video.frames[t].shape)
        cur, before = (_gray_crop(upright(video.frames[i], box, roll), region) for i in (t, t - 1))
        motion[t] = float(np.abs(cur - before).mean())
    return motion


def _gray_crop(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    g = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, MOUTH_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def envelope_change(audio: Audio, fps: float, num_frames: int) -> np.ndarray:
    """``[num_frames]`` |RMS[t] - RMS[t-1]|, RMS over each video frame's audio span.

    Audio is resampled so one video frame is a whole number of samples (16 kHz at 25 fps,
    640 samples); librosa's RMS with frame = hop = that span and no centring gives exactly
    one value per video frame interval. Missing tail frames are zero.
    """
    hop = max(1, round(16000 / fps))
    x = resample_audio(audio, int(round(hop * fps)))
    rms = librosa.feature.rms(y=x, frame_length=hop, hop_length=hop, center=False)[0]
    rms = np.pad(rms, (0, max(0, num_frames - len(rms))))[:num_frames]
    change = np.zeros(num_frames)
    change[1:] = np.abs(np.diff(rms))
    return change


def lagged_correlation(video_sig: np.ndarray, audio_sig: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r between video_sig[t] and audio_sig[t - lag] for lag in [-max_shift, max_shift]."""
    n = len(video_sig)
    lags = np.arange(-max_shift, max_shift + 1)
    corr = np.full(len(lags), np.nan)
    for i, lag in enumerate(lags):
        t0, t1 = max(1, lag + 1), min(n, n + lag)  # skip index 0 of both (no predecessor)
        if t1 - t0 < MIN_OVERLAP:
            continue
        v, a = video_sig[t0:t1], audio_sig[t0 - lag : t1 - lag]
        if v.std() > 0 and a.std() > 0:
            corr[i] = float(np.corrcoef(v, a)[0, 1])
    return lags, corr


def av_sync(video: Video, audio: Audio, max_shift: int = 15, track: FaceTrack | None = None) -> AVSyncResult:
    """Best lag between mouth motion and envelope change, with a peak-over-median confidence.

    ``track``: the clip's face track (default: tracked here with MTCNN). Raises
    ``MetricUnavailable`` when too few frames show a face (``face.require_face``).
    """
    if video.num_frames < 2 * max_shift + MIN_OVERLAP:
        raise EvalInputError(
            f"av_sync needs at least {2 * max_shift + MIN_OVERLAP} frames for a ±{max_shift}-frame search; "
            f"got {video.num_frames}"
        )
    track = track or track_face(video.frames)
    require_face(track, "av_sync")  # no face: no lip-sync number (available: false, with the reason)
    lags, corr = lagged_correlation(mouth_motion(video, track), envelope_change(audio, video.fps, video.num_frames), max_shift)
    if np.isnan(corr).all():
        raise EvalInputError("av_sync: mouth motion or audio envelope is constant (static video or silent audio)")
    valid = corr[~np.isnan(corr)]
    best = int(np.nanargmax(corr))
    peak = float(corr[best])
    spread = float(valid.std())
    return AVSyncResult(
        offset_frames=int(lags[best]),
        offset_ms=float(lags[best] * 1000.0 / video.fps),
        peak_correlation=peak,
        confidence=peak - float(np.median(valid)),
        peak_zscore=(peak - float(valid.mean())) / spread if spread > 0 else 0.0,
        lags=[int(x) for x in lags],
        correlations=[float(x) for x in corr],
        face_detection_rate=track.detection_rate,
    )
