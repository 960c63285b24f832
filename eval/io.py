"""Video and audio containers plus PyAV readers/writers.

Every metric works on these two dataclasses so that a path, an in-memory array and a
decoded file all reach the metrics in one shape: RGB uint8 frames and float32 audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import EvalInputError, WeightsUnavailable


@dataclass(frozen=True)
class Video:
    """RGB frames ``[T, H, W, 3]`` uint8 at ``fps`` frames per second.

    ``declared_frames``: the frame count its container states, where it was read from one
    that states it; more than ``num_frames`` only when read with ``allow_truncated``.
    """

    frames: np.ndarray
    fps: float
    declared_frames: int | None = None

    @property
    def truncated(self) -> bool:
        return self.declared_frames is not None and self.declared_frames > self.num_frames

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            got = f"{getattr(f, 'dtype', type(f).__name__)} array of shape {getattr(f, 'shape', '?')}"
            raise EvalInputError(f"video frames must be a uint8 array [T, H, W, 3]; got {got}")
        if f.shape[0] < 1:
            raise EvalInputError("video has no frames; expected at least 1")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise EvalInputError(f"video fps must be a positive number; got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


@dataclass(frozen=True)
class Audio:
    """Float32 samples ``[channels, N]`` in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray) or s.ndim != 2 or not np.issubdtype(s.dtype, np.floating):
            got = f"{getattr(s, 'dtype', type(s).__name__)} array of shape {getattr(s, 'shape', '?')}"
            raise EvalInputError(f"audio samples must be a float array [channels, N]; got {got}")
        if s.shape[1] < 1:
            raise EvalInputError("audio has no samples; expected at least 1")
        if int(self.sample_rate) <= 0:
            raise EvalInputError(f"audio sample rate must be positive; got {self.sample_rate!r}")

    @classmethod
    def from_array(cls, samples: np.ndarray, sample_rate: int) -> "Audio":
        """Accept mono ``[N]`` or ``[channels, N]``; integer PCM is scaled to [-1, 1]."""
        a = np.asarray(samples)
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float64) / -float(np.iinfo(a.dtype).min)
        a = a.astype(np.float32, copy=False)
        if a.ndim == 1:
            a = a[None, :]
        return cls(a, int(sample_rate))

    @property
    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=0)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"cannot read {str(p)!r}: no such file (expected a video/audio file readable by PyAV)")
    try:
        return av.open(str(p))
    except av.error.FFmpegError as e:
        raise EvalInputError(f"cannot read {str(p)!r}: not a media file PyAV can open ({e})") from e


def read_video(path: str | Path, allow_truncated: bool = False) -> Video:
    """Decode every frame of the first video stream as RGB.

    A still image is refused, and so is a container that decodes to fewer frames than it
    declares (a cut-off file) unless ``allow_truncated``: then the frames there are, with
    ``declared_frames`` saying what is missing.
    """
    with _open(path) as container:
        if _is_image(container):
            raise EvalInputError(f"{str(path)!r} is a still image ({container.format.name}), not a video; "
                                 "expected a video file (mp4 or anything PyAV reads as a video)")  # fmt: skip
        if not container.streams.video:
            raise EvalInputError(f"{str(path)!r} has no video stream; expected a video file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        declared = stream.frames or None  # 0: the container does not say
        try:
            frames = [fr.to_ndarray(format="rgb24") for fr in container.decode(stream)]
        except av.error.FFmpegError as e:
            raise EvalInputError(f"cannot decode video stream of {str(path)!r}: {e}") from e
    if not frames:
        raise EvalInputError(f"{str(path)!r} has a video stream but no decodable frames")
    if rate is None:
        raise EvalInputError(f"{str(path)!r} does not state a frame rate; pass frames with an explicit fps")
    if declared is not None and len(frames) < declared and not allow_truncated:
        raise EvalInputError(f"{str(path)!r} declares {declared} frames but only {len(frames)} decode (a truncated "
                             "file?); expected all of them (allow_truncated / --allow-truncated scores what is there)")
    return Video(np.stack(frames), float(rate), declared)


def _is_image(container: av.container.InputContainer) -> bool:
    """FFmpeg reads still images through its image demuxers: ``image2`` and the ``*_pipe`` ones."""
    names = container.format.name.split(",")
    return any(n == "image2" or n.endswith("_pipe") for n in names)


def has_audio(path: str | Path) -> bool:
    with _open(path) as container:
        return bool(container.streams.audio)


def read_audio(path: str | Path, allow_truncated: bool = False) -> Audio:
    """Decode the first audio stream to float32 planar, keeping its channels and rate.

    ``allow_truncated``: a stream whose data breaks off (a cut-off file) gives the samples before the break.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise EvalInputError(f"{str(path)!r} has no audio stream; expected a file with audio")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        layout = stream.codec_context.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(r.to_ndarray() for r in resampler.resample(frame))
            chunks.extend(r.to_ndarray() for r in resampler.resample(None))
        except av.error.FFmpegError as e:
            if not (allow_truncated and chunks):
                raise EvalInputError(f"cannot decode audio stream of {str(path)!r}: {e}") from e
    if not chunks:
        raise EvalInputError(f"{str(path)!r} has an audio stream but no decodable samples")
    return Audio(np.concatenate(chunks, axis=1).astype(np.float32), int(rate))


def write_video(path: str | Path, video: Video, audio: Audio | None = None, crf: int = 18) -> None:
    """Encode H.264 (yuv420p) + optional AAC; used by tests and for saving eval inputs."""
    fps = Fraction(video.fps).limit_denominator(1001)
    h, w = video.size
    if h % 2 or w % 2:
        raise EvalInputError(f"H.264 yuv420p needs even frame sizes; got {w}x{h}")
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=audio.sample_rate)
            as_.layout = "mono" if audio.channels == 1 else "stereo"
        for f in video.frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
        if as_ is not None:
            _mux_audio(out, as_, audio)


def _mux_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, audio: Audio) -> None:
    layout = "mono" if audio.channels == 1 else "stereo"
    data = np.ascontiguousarray(audio.samples[:2].astype(np.float32))
    step = 1024  # AAC frame size
    for start in range(0, data.shape[1], step):
        chunk = np.ascontiguousarray(data[:, start : start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = audio.sample_rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def resample_audio(audio: Audio, rate: int) -> np.ndarray:
    """Mono float32 at ``rate`` Hz (polyphase, exact rational ratio)."""
    from math import gcd

    from scipy.signal import resample_poly

    x = audio.mono.astype(np.float64)
    if audio.sample_rate == rate:
        return x.astype(np.float32)
    g = gcd(int(rate), int(audio.sample_rate))
    return resample_poly(x, rate // g, audio.sample_rate // g).astype(np.float32)


def resample_video_fps(video: Video, fps: float) -> Video:
    """Nearest-frame retiming (drop/duplicate), as ``ffmpeg -r`` does for a constant rate."""
    if abs(video.fps - fps) < 1e-6:
        return video
    n = max(1, int(round(video.duration_s * fps)))
    idx = np.minimum(np.floor(np.arange(n) * video.fps / fps + 1e-9).astype(int), video.num_frames - 1)
    return Video(video.frames[idx], float(fps))


def require_model_dir(path: str | Path, what: str) -> Path:
    """A local ``save_pretrained`` directory, or ``WeightsUnavailable`` saying what is missing."""
    p = Path(path)
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise WeightsUnavailable(
            f"{what} must be a local directory saved with save_pretrained (with config.json); got {str(p)!r}"
        )
    return p
