"""The one declaration of every eval metric: what it computes, what it needs, and the flat
numbers it records, each with the direction that is better.

``score`` runs metrics from here, the sweep flattens their results into the store's flat
names with :meth:`Metric.flatten`, and the report reads each flat name's direction from
:func:`output_specs`. Adding a metric here is all it takes for all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import EvalInputError, WeightsUnavailable

if TYPE_CHECKING:
    from .api import EvalConfig
    from .face import FaceTrack
    from .io import Audio, Video


@dataclass(frozen=True)
class MetricSpec:
    """Which way a recorded number is better, and how to turn a change into a relative one."""

    higher_is_better: bool
    floor: float = 1e-6  # smallest baseline magnitude used as denominator of a relative change
    magnitude: bool = False  # compare |x|: a signed offset whose best value is 0

    def score(self, x: float) -> float:
        return abs(x) if self.magnitude else x

    def worsening(self, baseline: float, current: float) -> float:
        """Change in the bad direction, relative to the baseline (negative = improved)."""
        b, c = self.score(baseline), self.score(current)
        delta = (b - c) if self.higher_is_better else (c - b)
        return delta / max(abs(b), self.floor)


@dataclass(frozen=True)
class Output:
    """One recorded number: the store's flat name ``key``, read from the result's ``field``."""

    key: str
    field: str
    spec: MetricSpec


@dataclass
class Inputs:
    """A clip's inputs, normalised once by ``score``; the face track is computed on first use
    and shared by every metric that needs it."""

    video: Video
    reference: Video | None
    audio: Audio | None
    config: EvalConfig
    _track: FaceTrack | None = None

    def track(self) -> FaceTrack:
        if self._track is None:
            from .face import track_face

            self._track = track_face(self.video.frames, self.config.face_detector, self.config.s3fd_weights,
                                     self.config.device)  # fmt: skip
        return self._track


@dataclass(frozen=True)
class Metric:
    """An eval metric: ``compute`` returns a result dataclass (or dict) whose ``outputs``
    fields are recorded; ``needs_reference`` / ``needs_audio`` are checked before it runs."""

    compute: Callable[[Inputs], Any]
    outputs: tuple[Output, ...]
    needs_reference: bool = False
    needs_audio: bool = False
    uses_face: bool = False  # reads the clip's face track: its entry records the face detector

    def check(self, name: str, x: Inputs) -> None:
        if self.needs_reference and x.reference is None:
            raise EvalInputError(
                f"metric {name!r} compares against a reference video; pass reference= (CLI: --reference)"
            )
        if self.needs_audio and x.audio is None:
            raise EvalInputError(
                f"metric {name!r} needs audio: the video has no audio stream and none was passed (CLI: --audio)"
            )

    def flatten(self, entry: dict) -> dict[str, float | None]:
        """The store's flat numbers from one ``score`` entry (None where it is unavailable)."""
        ok = entry.get("available", False)
        return {o.key: float(entry[o.field]) if ok and entry.get(o.field) is not None else None for o in self.outputs}


def _out(key: str, field_: str, higher_is_better: bool, floor: float, magnitude: bool = False) -> Output:
    return Output(key, field_, MetricSpec(higher_is_better, floor, magnitude))


# ---------------------------------------------------------------- computations (lazy imports: light to list)


def _psnr(x: Inputs) -> Any:
    from .quality import psnr

    return psnr(x.video, x.reference)


def _ssim(x: Inputs) -> Any:
    from .quality import ssim

    return ssim(x.video, x.reference)


def _lpips(x: Inputs) -> Any:
    from .perceptual import load_lpips, lpips_distance

    return lpips_distance(x.video, x.reference, load_lpips(x.config.lpips_alexnet), random_trunk=False)


def _av_sync(x: Inputs) -> Any:
    from .av_sync import av_sync

    return av_sync(x.video, x.audio, x.config.max_shift, x.track())


def _temporal(x: Inputs) -> Any:
    from .quality import temporal_consistency

    return temporal_consistency(x.video)


def _flicker(x: Inputs) -> Any:
    from .quality import flicker

    return flicker(x.video)


def _syncnet(x: Inputs) -> Any:
    from .syncnet import FPS, load_syncnet, lse

    if x.config.syncnet_weights is None:
        raise WeightsUnavailable(
            "SyncNet weights not given (pass syncnet_weights= / --syncnet-weights PATH to syncnet_v2.model)"
        )
    model = load_syncnet(x.config.syncnet_weights, x.config.device)
    if abs(x.video.fps - FPS) < 1e-6:
        return lse(x.video, x.audio, model, x.track())
    return lse(x.video, x.audio, model, detector=x.config.face_detector, s3fd_weights=x.config.s3fd_weights)


def _audio(x: Inputs) -> Any:
    from .audio_checks import audio_checks

    return audio_checks(x.audio, x.video.duration_s, x.video.fps)


def _wer(x: Inputs) -> Any:
    from .asr import speech_wer

    if not x.config.transcript:
        raise EvalInputError("metric 'wer' needs the reference transcript (transcript= / --transcript TEXT)")
    if x.config.whisper_dir is None:
        raise WeightsUnavailable("no ASR model given (whisper_dir= / --whisper DIR, a local save_pretrained directory)")
    return speech_wer(x.audio, x.config.transcript, x.config.whisper_dir, x.config.device)


def _clip(x: Inputs) -> Any:
    from .clip_align import clip_alignment

    if not x.config.prompt:
        raise EvalInputError("metric 'clip' needs a text prompt (prompt= / --prompt TEXT)")
    if x.config.clip_dir is None:
        raise WeightsUnavailable("no CLIP model given (clip_dir= / --clip DIR, a local save_pretrained directory)")
    return clip_alignment(x.video, x.config.prompt, x.config.clip_dir, device=x.config.device)


METRICS: dict[str, Metric] = {
    "psnr": Metric(_psnr, (_out("psnr", "mean", True, 1.0),), needs_reference=True),
    "ssim": Metric(_ssim, (_out("ssim", "mean", True, 0.01),), needs_reference=True),
    "lpips": Metric(_lpips, (_out("lpips", "mean", False, 0.01),), needs_reference=True),
    "av_sync": Metric(
        _av_sync,
        (
            _out("av_offset_frames", "offset_frames", False, 1.0, magnitude=True),
            _out("av_confidence", "confidence", True, 0.1),
        ),
        needs_audio=True,
        uses_face=True,
    ),
    "temporal_consistency": Metric(_temporal, (_out("temporal_warp_error", "warp_error", False, 1e-3),)),
    "flicker": Metric(_flicker, (_out("flicker", "mean_abs_luma_change", False, 1e-3),)),
    "syncnet": Metric(
        _syncnet,
        (
            _out("lse_d", "lse_d", False, 0.1),
            _out("lse_c", "lse_c", True, 0.1),
            _out("syncnet_offset_frames", "offset_frames", False, 1.0, magnitude=True),
        ),
        needs_audio=True,
        uses_face=True,
    ),
    "audio": Metric(
        _audio,
        (
            _out("audio_duration_diff_s", "duration_diff_s", False, 0.04, magnitude=True),
            _out("audio_clipping_ratio", "clipping_ratio", False, 1e-3),
            _out("audio_silence_ratio", "silence_ratio", False, 1e-2),
        ),
        needs_audio=True,
    ),
    "wer": Metric(_wer, (_out("wer", "wer", False, 0.01),), needs_audio=True),
    "clip": Metric(_clip, (_out("clip_score", "clip_score", True, 1.0),)),
}
"""Every metric ``score`` knows, in the order the report lists their numbers."""


def output_specs() -> dict[str, MetricSpec]:
    """Direction of every flat number the metrics record, keyed by the store's flat name."""
    return {o.key: o.spec for m in METRICS.values() for o in m.outputs}


def output_keys(names: list[str]) -> list[str]:
    """The store's flat names the given metrics record."""
    return [o.key for name in names for o in METRICS[name].outputs]
