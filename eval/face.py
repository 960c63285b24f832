"""Single-face detection and tracking with OpenCV's Haar cascade.

The lip-sync protocol (syncnet_python ``run_pipeline``) detects faces per frame (S3FD),
links detections by IoU, interpolates missed frames and median-filters the box centre and
size over 13 frames. We keep that shape but use the Haar frontal-face cascade shipped with
OpenCV, because no detector weights can be downloaded here. Haar boxes are tighter and
more jittery than S3FD's, so crops are close to, not identical with, the reference ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from scipy.signal import medfilt

from .errors import MetricUnavailable

MIN_FACE_DETECTION_RATE = 0.5
"""Lip-sync metrics need a face detected in at least this share of frames: below it the mouth
crops follow interpolated or invented boxes, and a best lag over noise is still a number."""
DETECT_MAX_SIDE = 320  # frames are downscaled to this for detection (protocol: facedet_scale)
IOU_LINK = 0.5  # minimum IoU between consecutive detections of one track (protocol value)
SMOOTH_KERNEL = 13  # median filter length for box centre/size (protocol value)


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame face boxes ``[T, 4]`` as (x0, y0, x1, y1) in pixels.

    ``source`` is "haar" when a face was found, "frame_fallback" when none was and the
    boxes cover the whole frame instead. ``detected`` marks frames with a real detection;
    the rest were interpolated.
    """

    boxes: np.ndarray
    detected: np.ndarray
    source: Literal["haar", "frame_fallback"]

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean())


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    casc = cv2.CascadeClassifier(path)
    if casc.empty():
        raise RuntimeError(f"OpenCV Haar cascade could not be loaded from {path}")
    return casc


def detect_faces(frame_rgb: np.ndarray) -> np.ndarray:
    """All frontal faces in one RGB frame as ``[K, 4]`` (x0, y0, x1, y1), largest first."""
    h, w = frame_rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(0.1 * min(gray.shape)))
    found = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(found) == 0:
        return np.zeros((0, 4), np.float64)
    boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in found], np.float64) / scale
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-area)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _link(per_frame: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Follow the largest first face through frames by IoU; unmatched frames are NaN."""
    t = len(per_frame)
    boxes = np.full((t, 4), np.nan)
    last = None
    for i, dets in enumerate(per_frame):
        if len(dets) == 0:
            continue
        if last is None:
            boxes[i] = last = dets[0]
            continue
        overlaps = [iou(last, d) for d in dets]
        j = int(np.argmax(overlaps))
        if overlaps[j] > IOU_LINK:
            boxes[i] = last = dets[j]
    return boxes, ~np.isnan(boxes[:, 0])


def _interpolate(boxes: np.ndarray, detected: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(detected)
    t = np.arange(len(boxes))
    return np.stack([np.interp(t, idx, boxes[idx, k]) for k in range(4)], axis=1)


def _smooth(boxes: np.ndarray) -> np.ndarray:
    """Median-filter centre and half-size, as the protocol does before cropping."""
    k = min(SMOOTH_KERNEL, len(boxes) if len(boxes) % 2 else len(boxes) - 1)
    if k < 3:
        return boxes
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, k)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, k)
    s = medfilt(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, k)
    return np.stack([cx - s, cy - s, cx + s, cy + s], axis=1)


def track_face(frames: np.ndarray) -> FaceTrack:
    """Detect and track the dominant face through ``frames`` ``[T, H, W, 3]`` RGB."""
    boxes, detected = _link([detect_faces(f) for f in frames])
    if not detected.any():
        h, w = frames.shape[1:3]
        full = np.tile(np.array([0.0, 0.0, w, h]), (len(frames), 1))
        return FaceTrack(full, detected, "frame_fallback")
    return FaceTrack(_smooth(_interpolate(boxes, detected)), detected, "haar")


def require_face(track: FaceTrack, metric: str) -> None:
    """Raise :class:`MetricUnavailable` (reported as ``available: false`` with this reason)
    unless a face was detected in at least ``MIN_FACE_DETECTION_RATE`` of the frames."""
    if track.detection_rate < MIN_FACE_DETECTION_RATE:
        raise MetricUnavailable(
            f"{metric} needs a face: one was detected in {track.detection_rate:.0%} of the frames, "
            f"below the {MIN_FACE_DETECTION_RATE:.0%} threshold"
        )


def mouth_region(box: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) of the mouth area (the lower half of the face box, central 60%
    of its width), clipped to the frame."""
    h, w = frame_shape[:2]
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    r = (x0 + 0.2 * bw, y0 + 0.5 * bh, x1 - 0.2 * bw, y1)
    xa, ya = int(np.clip(round(r[0]), 0, w - 1)), int(np.clip(round(r[1]), 0, h - 1))
    xb, yb = int(np.clip(round(r[2]), xa + 1, w)), int(np.clip(round(r[3]), ya + 1, h))
    return xa, ya, xb, yb
