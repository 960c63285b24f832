"""``score``: run a chosen set of metrics on one clip and return a JSON-ready dict.

Inputs are normalised once (decoded, face tracked once and shared by the sync metrics),
then each metric (declared in ``eval.metrics``) runs on its own. A metric whose model
weights are missing, or that cannot apply to the clip (no face for SyncNet), comes back as
``{"available": false, "reason": ...}``; bad inputs raise ``EvalInputError`` (or, with
``strict=False``, are recorded per metric the same way so one bad fit loses no other).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union, get_args

import numpy as np

from .errors import EvalInputError, MetricUnavailable
from .face import DetectorName
from .io import Audio, Video, has_audio, read_audio, read_video
from .metrics import METRICS, Inputs

VideoInput = Union[str, Path, np.ndarray, Video]
AudioInput = Union[str, Path, Audio, tuple]


@dataclass(frozen=True)
class EvalConfig:
    """Model locations and options; every model is read from a local path only."""

    syncnet_weights: str | Path | None = None  # syncnet_v2.model or a .safetensors
    lpips_alexnet: str | Path | None = None  # torchvision alexnet-owt-7be5be79.pth; default: torch hub cache
    whisper_dir: str | Path | None = None  # save_pretrained directory of an ASR model
    transcript: str | None = None  # reference text for WER
    clip_dir: str | Path | None = None  # save_pretrained directory of a CLIP model
    prompt: str | None = None  # text for CLIP alignment
    max_shift: int = 15  # ± frames searched by av_sync (SyncNet's is fixed at 15 by protocol)
    face_detector: DetectorName = "mtcnn"  # the face track of av_sync and syncnet (eval.face)
    s3fd_weights: str | Path | None = None  # the user's sfd_face.pth, for face_detector="s3fd"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.face_detector not in get_args(DetectorName):
            expected = list(get_args(DetectorName))
            raise EvalInputError(f"face_detector must be one of {expected}; got {self.face_detector!r}")


def default_metrics(has_reference: bool, has_audio_: bool, config: EvalConfig) -> list[str]:
    """Every metric the given inputs allow; model-based ones are listed (maybe unavailable)."""
    names = ["temporal_consistency", "flicker"]
    if has_audio_:
        names = ["av_sync", "syncnet", "audio"] + names
        if config.transcript:
            names.append("wer")
    if has_reference:
        names += ["psnr", "ssim", "lpips"]
    if config.prompt:
        names.append("clip")
    return names


def _as_video(v: VideoInput, fps: float | None, what: str) -> Video:
    if isinstance(v, Video):
        return v
    if isinstance(v, np.ndarray):
        if fps is None:
            raise EvalInputError(f"{what} given as an array needs fps= (frames per second)")
        return Video(v, float(fps))
    if isinstance(v, (str, Path)):
        return read_video(v)
    raise EvalInputError(f"{what} must be a file path, a uint8 array [T, H, W, 3] or a Video; got {type(v).__name__}")


def _as_audio(a: AudioInput | None, video: VideoInput) -> Audio | None:
    if a is None:
        return read_audio(video) if isinstance(video, (str, Path)) and has_audio(video) else None
    if isinstance(a, Audio):
        return a
    if isinstance(a, (str, Path)):
        return read_audio(a)
    if isinstance(a, tuple) and len(a) == 2:
        return Audio.from_array(np.asarray(a[0]), int(a[1]))
    raise EvalInputError(f"audio must be a file path, an Audio or a (samples, sample_rate) tuple; got {type(a).__name__}")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def score(
    video: VideoInput,
    reference: VideoInput | None = None,
    audio: AudioInput | None = None,
    metrics: Sequence[str] | None = None,
    *,
    fps: float | None = None,
    config: EvalConfig | None = None,
    strict: bool = True,
) -> dict:
    """Compute ``metrics`` (default: all the inputs allow) for ``video``.

    ``video``/``reference``: an mp4 path, a uint8 ``[T, H, W, 3]`` RGB array (then ``fps``
    is required; the reference uses the same), or a ``Video``. ``audio``: a path, an
    ``Audio`` or ``(samples, sample_rate)``; by default the video file's own audio stream.
    Returns ``{"video": {...}, "audio": {...} | None, "metrics": {name: {...}}}``; each
    metric entry has ``available`` and either its values or a ``reason``, plus ``elapsed_s``;
    the face-tracking ones also name the ``face_detector``. ``strict=False`` records a
    metric whose inputs do not fit (``EvalInputError``: too short, no transcript, ...) as
    unavailable with the reason instead of raising, so the other metrics still run.
    """
    config = config or EvalConfig()
    names = list(metrics) if metrics is not None else None
    unknown = [m for m in names or [] if m not in METRICS]
    if unknown:
        raise EvalInputError(f"unknown metric(s) {unknown}; expected any of {sorted(METRICS)}")
    v = _as_video(video, fps, "video")
    ref = None if reference is None else _as_video(reference, v.fps, "reference")
    inputs = Inputs(v, ref, _as_audio(audio, video), config)
    if names is None:
        names = default_metrics(ref is not None, inputs.audio is not None, config)
    results = {}
    for name in names:
        metric, start = METRICS[name], time.perf_counter()
        try:
            metric.check(name, inputs)
            entry = {"available": True, **_jsonable(metric.compute(inputs))}
        except MetricUnavailable as e:
            entry = {"available": False, "reason": str(e)}
        except EvalInputError as e:
            if strict:
                raise
            entry = {"available": False, "reason": str(e)}
        if metric.uses_face:
            entry["face_detector"] = config.face_detector
        entry["elapsed_s"] = round(time.perf_counter() - start, 4)
        results[name] = entry
    return {
        "video": {"num_frames": v.num_frames, "fps": v.fps, "width": v.size[1], "height": v.size[0], "duration_s": v.duration_s},
        "audio": None
        if inputs.audio is None
        else {"sample_rate": inputs.audio.sample_rate, "channels": inputs.audio.channels, "duration_s": inputs.audio.duration_s},
        "metrics": results,
    }
