"""Single-face detection and tracking for the lip-sync metrics.

The protocol (syncnet_python ``run_pipeline``) detects faces per frame at a reduced scale,
links detections by IoU, interpolates missed frames and median-filters the box centre and
size over 13 frames; we keep that and add the in-plane roll, so a tilted head gives the same
(de-rotated) mouth crop as an upright one. Three detectors (``EvalConfig.face_detector``):

* ``mtcnn`` (default): MTCNN with the P/R/O-net weights shipped inside the facenet-pytorch
  wheel (offline), read with ``weights_only=True``, batched over frames on the eval device.
  It gives eye and mouth-corner landmarks, from which the roll is estimated. It finds small,
  tilted and moving faces on textured backgrounds (docs/eval.md has the side-by-side table).
* ``s3fd``: the protocol's own detector (``eval.s3fd``) from the user's ``sfd_face.pth``;
  crops then match the published LSE pipeline. No landmarks: roll 0.
* ``haar``: OpenCV's frontal-face cascade; large upright faces only. No landmarks: roll 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
from scipy.signal import medfilt

from .errors import MetricUnavailable

DetectorName = Literal["mtcnn", "s3fd", "haar"]
MIN_FACE_DETECTION_RATE = 0.5
"""Lip-sync metrics need a face detected in at least this share of frames: below it the mouth
crops follow interpolated or invented boxes, and a best lag over noise is still a number."""
DETECT_MAX_SIDE = 320  # frames are downscaled to this for detection (protocol: facedet_scale)
IOU_LINK = 0.5  # minimum IoU between consecutive detections of one track (protocol value)
SMOOTH_KERNEL = 13  # median filter length for box centre/size (protocol value)
MTCNN_MIN_FACE = 20  # px at detection scale: a face 1/8 of a 256p frame is still found
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-net acceptance (facenet-pytorch's defaults)
MTCNN_FACTOR = 0.709  # image pyramid step
DETECT_BATCH = 16  # frames per batched pass of a CNN detector (bounds its activation memory)


@dataclass(frozen=True)
class Detections:
    """One frame's faces, best first: boxes ``[K, 4]`` (x0, y0, x1, y1) px, scores ``[K]``,
    and MTCNN's five landmarks ``[K, 5, 2]`` (eyes, nose, mouth corners) or None."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None


Detector = Callable[[np.ndarray], list[Detections]]
"""Batched detector: ``[N, H, W, 3]`` RGB uint8 at detection scale -> one ``Detections`` per frame."""


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame face boxes ``[T, 4]`` (x0, y0, x1, y1) px and in-plane roll ``[T]`` (radians,
    positive when the head leans to the image's right: its right-hand eye is lower).

    ``source`` is the detector when a face was found, "frame_fallback" when none was and the
    boxes cover the whole frame instead. ``detected`` marks frames with a real detection;
    the rest were interpolated.
    """

    boxes: np.ndarray
    detected: np.ndarray
    source: str
    roll: np.ndarray

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean())


# ---------------------------------------------------------------- detectors


def _by_area(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray | None = None) -> Detections:
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    return Detections(boxes[order], scores[order], None if landmarks is None else landmarks[order])


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    casc = cv2.CascadeClassifier(path)
    if casc.empty():
        raise RuntimeError(f"OpenCV Haar cascade could not be loaded from {path}")
    return casc


def haar_detector(frames: np.ndarray) -> list[Detections]:
    out = []
    for frame in frames:
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        min_side = max(24, int(0.1 * min(gray.shape)))
        found = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found], np.float64).reshape(-1, 4)
        out.append(_by_area(boxes, np.ones(len(boxes))))
    return out


class MTCNNDetector:
    """MTCNN (Zhang et al. 2016) from facenet-pytorch's networks and the weights in its wheel;
    the cascade itself is facenet-pytorch's batched ``detect_face``."""

    def __init__(self, device: str = "cpu") -> None:
        import facenet_pytorch
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        data = Path(facenet_pytorch.__file__).parent / "data"
        self.nets = []
        for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
            net = cls(pretrained=False)
            net.load_state_dict(torch.load(data / f"{name}.pt", map_location="cpu", weights_only=True))
            self.nets.append(net.to(device).eval())
        self.device = torch.device(device)

    def __call__(self, frames: np.ndarray) -> list[Detections]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        out = []
        for start in range(0, len(frames), DETECT_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start : start + DETECT_BATCH])).to(self.device)
            with torch.no_grad():
                boxes, points = detect_face(batch, MTCNN_MIN_FACE, *self.nets, MTCNN_THRESHOLDS, MTCNN_FACTOR, self.device)
            for b, p in zip(boxes, points):
                b = np.asarray(b, np.float64).reshape(-1, 5)
                out.append(_by_area(b[:, :4], b[:, 4], np.asarray(p, np.float64).reshape(-1, 5, 2)))
        return out


class S3FDDetector:
    def __init__(self, weights: str | Path | None, device: str = "cpu") -> None:
        from .s3fd import load_s3fd

        self.model = load_s3fd(weights, device)

    def __call__(self, frames: np.ndarray) -> list[Detections]:
        from .s3fd import detect

        found = [detect(self.model, frames[i : i + DETECT_BATCH]) for i in range(0, len(frames), DETECT_BATCH)]
        return [_by_area(b, s) for batch in found for b, s in batch]


@lru_cache(maxsize=4)
def face_detector(name: DetectorName = "mtcnn", s3fd_weights: str | Path | None = None,
                  device: str = "cpu") -> Detector:  # fmt: skip
    """The named detector, its weights loaded once per process."""
    if name == "mtcnn":
        return MTCNNDetector(device)
    if name == "s3fd":
        return S3FDDetector(s3fd_weights, device)
    if name == "haar":
        return haar_detector
    raise ValueError(f"face detector must be one of mtcnn, s3fd, haar; got {name!r}")


def detect_faces(frames: np.ndarray, detector: Detector) -> list[Detections]:
    """``detector`` on ``frames`` ``[T, H, W, 3]`` downscaled to ``DETECT_MAX_SIDE``; boxes and
    landmarks in full-frame pixels."""
    h, w = frames.shape[1:3]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return [Detections(d.boxes / scale, d.scores, None if d.landmarks is None else d.landmarks / scale)
            for d in detector(frames)]  # fmt: skip


# ---------------------------------------------------------------- tracking


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def roll_from_landmarks(points: np.ndarray) -> float:
    """In-plane roll (radians) from MTCNN's five points: the mean direction of the eye line
    and the mouth-corner line (image-left to image-right)."""
    v = (points[1] - points[0]) + (points[4] - points[3])
    return float(np.arctan2(v[1], v[0]))


def _link(per_frame: list[Detections]) -> tuple[np.ndarray, np.ndarray]:
    """Follow the largest first face through frames by IoU: boxes ``[T, 4]`` and roll ``[T]``,
    NaN where unmatched (roll also NaN where the detector gives no landmarks)."""
    t = len(per_frame)
    boxes, roll = np.full((t, 4), np.nan), np.full(t, np.nan)
    last = None
    for i, dets in enumerate(per_frame):
        if len(dets.boxes) == 0:
            continue
        j = 0
        if last is not None:
            overlaps = [iou(last, d) for d in dets.boxes]
            j = int(np.argmax(overlaps))
            if overlaps[j] <= IOU_LINK:
                continue
        boxes[i] = last = dets.boxes[j]
        if dets.landmarks is not None:
            roll[i] = roll_from_landmarks(dets.landmarks[j])
    return boxes, roll


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames of ``values`` ``[T, K]`` from the ``known`` rows."""
    idx, t = np.flatnonzero(known), np.arange(len(values))
    return np.stack([np.interp(t, idx, values[idx, k]) for k in range(values.shape[1])], axis=1)


def _median(x: np.ndarray) -> np.ndarray:
    k = min(SMOOTH_KERNEL, len(x) if len(x) % 2 else len(x) - 1)
    return medfilt(x, k) if k >= 3 else x


def _smooth(boxes: np.ndarray) -> np.ndarray:
    """Median-filter centre and half-size, as the protocol does before cropping."""
    cx = _median((boxes[:, 0] + boxes[:, 2]) / 2)
    cy = _median((boxes[:, 1] + boxes[:, 3]) / 2)
    s = _median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2)
    return np.stack([cx - s, cy - s, cx + s, cy + s], axis=1)


def track_face(frames: np.ndarray, detector: DetectorName = "mtcnn", s3fd_weights: str | Path | None = None,
               device: str = "cpu") -> FaceTrack:  # fmt: skip
    """Detect (``face_detector``) and track the dominant face through ``frames`` ``[T, H, W, 3]`` RGB."""
    boxes, roll = _link(detect_faces(frames, face_detector(detector, s3fd_weights, device)))
    detected = ~np.isnan(boxes[:, 0])
    if not detected.any():
        h, w = frames.shape[1:3]
        full = np.tile(np.array([0.0, 0.0, w, h]), (len(frames), 1))
        return FaceTrack(full, detected, "frame_fallback", np.zeros(len(frames)))
    has_roll = ~np.isnan(roll)
    roll = _median(_fill(roll[:, None], has_roll)[:, 0]) if has_roll.any() else np.zeros(len(frames))
    return FaceTrack(_smooth(_fill(boxes, detected)), detected, detector, roll)


def require_face(track: FaceTrack, metric: str) -> None:
    """Raise :class:`MetricUnavailable` (reported as ``available: false`` with this reason)
    unless a face was detected in at least ``MIN_FACE_DETECTION_RATE`` of the frames."""
    if track.detection_rate < MIN_FACE_DETECTION_RATE:
        raise MetricUnavailable(
            f"{metric} needs a face: one was detected in {track.detection_rate:.0%} of the frames, "
            f"below the {MIN_FACE_DETECTION_RATE:.0%} threshold"
        )


def upright(frame: np.ndarray, box: np.ndarray, roll: float) -> np.ndarray:
    """``frame`` rotated about the face centre so the face is upright (the frame itself when
    the roll is under a degree: crops of upright faces are exactly the protocol's)."""
    if abs(roll) < np.deg2rad(1.0):
        return frame
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    m = cv2.getRotationMatrix2D(centre, float(np.rad2deg(roll)), 1.0)
    size = (frame.shape[1], frame.shape[0])
    return cv2.warpAffine(frame, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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
