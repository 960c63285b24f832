"""``score``: run a chosen set of metrics on one clip and return a JSON-ready dict.

Inputs are normalised once (decoded, face tracked once and shared by the sync metrics),
then each metric runs on its own. A metric whose model weights are missing, or that
cannot apply to the clip (no face for SyncNet), comes back as
``{"available": false, "reason": ...}``; bad inputs raise ``EvalInputError``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from .errors import EvalInputError, MetricUnavailable, WeightsUnavailable
from .face import FaceTrack, track_face
from .io import Audio, Video, has_audio, read_audio, read_video

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
    device: str = "cpu"


@dataclass
class _Inputs:
    video: Video
    reference: Video | None
    audio: Audio | None
    config: EvalConfig
    _track: FaceTrack | None = None

    def track(self) -> FaceTrack:
        if self._track is None:
            self._track = track_face(self.video.frames)
        return self._track


def _needs(inputs: _Inputs, name: str, reference: bool = False, audio: bool = False) -> None:
    if reference and inputs.reference is None:
        raise EvalInputError(f"metric {name!r} compares against a reference video; pass reference= (CLI: --reference)")
    if audio and inputs.audio is None:
        raise EvalInputError(f"metric {name!r} needs audio: the video has no audio stream and none was passed (CLI: --audio)")


def _av_sync(x: _Inputs) -> Any:
    from .av_sync import av_sync

    _needs(x, "av_sync", audio=True)
    return av_sync(x.video, x.audio, x.config.max_shift, x.track())


def _syncnet(x: _Inputs) -> Any:
    from .syncnet import FPS, load_syncnet, lse

    _needs(x, "syncnet", audio=True)
    if x.config.syncnet_weights is None:
        raise WeightsUnavailable("SyncNet weights not given (pass syncnet_weights= / --syncnet-weights PATH to syncnet_v2.model)")
    model = load_syncnet(x.config.syncnet_weights, x.config.device)
    track = x.track() if abs(x.video.fps - FPS) < 1e-6 else None
    return lse(x.video, x.audio, model, track)


def _lpips(x: _Inputs) -> Any:
    from .perceptual import load_lpips, lpips_distance

    _needs(x, "lpips", reference=True)
    return lpips_distance(x.video, x.reference, load_lpips(x.config.lpips_alexnet), random_trunk=False)


def _psnr(x: _Inputs) -> Any:
    from .quality import psnr

    _needs(x, "psnr", reference=True)
    return psnr(x.video, x.reference)


def _ssim(x: _Inputs) -> Any:
    from .quality import ssim

    _needs(x, "ssim", reference=True)
    return ssim(x.video, x.reference)


def _temporal(x: _Inputs) -> Any:
    from .quality import temporal_consistency

    return temporal_consistency(x.video)


def _flicker(x: _Inputs) -> Any:
    from .quality import flicker

    return flicker(x.video)


def _audio(x: _Inputs) -> Any:
    from .audio_checks import audio_checks

    _needs(x, "audio", audio=True)
    return audio_checks(x.audio, x.video.duration_s, x.video.fps)


def _wer(x: _Inputs) -> Any:
    from .asr import speech_wer

    _needs(x, "wer", audio=True)
    if not x.config.transcript:
        raise EvalInputError("metric 'wer' needs the reference transcript (transcript= / --transcript TEXT)")
    if x.config.whisper_dir is None:
        raise WeightsUnavailable("no ASR model given (whisper_dir= / --whisper DIR, a local save_pretrained directory)")
    return speech_wer(x.audio, x.config.transcript, x.config.whisper_dir, x.config.device)


def _clip(x: _Inputs) -> Any:
    from .clip_align import clip_alignment

    if not x.config.prompt:
        raise EvalInputError("metric 'clip' needs a text prompt (prompt= / --prompt TEXT)")
    if x.config.clip_dir is None:
        raise WeightsUnavailable("no CLIP model given (clip_dir= / --clip DIR, a local save_pretrained directory)")
    return clip_alignment(x.video, x.config.prompt, x.config.clip_dir, device=x.config.device)


METRICS: dict[str, Callable[[_Inputs], Any]] = {
    "av_sync": _av_sync,
    "syncnet": _syncnet,
    "lpips": _lpips,
    "psnr": _psnr,
    "ssim": _ssim,
    "temporal_consistency": _temporal,
    "flicker": _flicker,
    "audio": _audio,
    "wer": _wer,
    "clip": _clip,
}


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
) -> dict:
    """Compute ``metrics`` (default: all the inputs allow) for ``video``.

    ``video``/``reference``: an mp4 path, a uint8 ``[T, H, W, 3]`` RGB array (then ``fps``
    is required; the reference uses the same), or a ``Video``. ``audio``: a path, an
    ``Audio`` or ``(samples, sample_rate)``; by default the video file's own audio stream.
    Returns ``{"video": {...}, "audio": {...} | None, "metrics": {name: {...}}}``; each
    metric entry has ``available`` and either its values or a ``reason``, plus ``elapsed_s``.
    """
    config = config or EvalConfig()
    names = list(metrics) if metrics is not None else None
    unknown = [m for m in names or [] if m not in METRICS]
    if unknown:
        raise EvalInputError(f"unknown metric(s) {unknown}; expected any of {sorted(METRICS)}")
    v = _as_video(video, fps, "video")
    ref = None if reference is None else _as_video(reference, v.fps, "reference")
    inputs = _Inputs(v, ref, _as_audio(audio, video), config)
    if names is None:
        names = default_metrics(ref is not None, inputs.audio is not None, config)
    results = {}
    for name in names:
        start = time.perf_counter()
        try:
            entry = {"available": True, **_jsonable(METRICS[name](inputs))}
        except MetricUnavailable as e:
            entry = {"available": False, "reason": str(e)}
        entry["elapsed_s"] = round(time.perf_counter() - start, 4)
        results[name] = entry
    return {
        "video": {"num_frames": v.num_frames, "fps": v.fps, "width": v.size[1], "height": v.size[0], "duration_s": v.duration_s},
        "audio": None
        if inputs.audio is None
        else {"sample_rate": inputs.audio.sample_rate, "channels": inputs.audio.channels, "duration_s": inputs.audio.duration_s},
        "metrics": results,
    }
