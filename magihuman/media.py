"""Media I/O: reference image, driving audio, and the final H.264 + AAC mp4.

Conventions (as in the reference pipeline): video runs at 25 fps; the audio VAE works on
51.2 kHz waveforms (so its 2048-sample hop gives 25 latents per second) and the delivered
audio is band-limited resampled to 44.1 kHz.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import librosa
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from scipy.signal import resample

from magihuman.clip import FPS
VAE_SAMPLE_RATE = 51_200
OUTPUT_SAMPLE_RATE = 44_100

MediaSource = str | os.PathLike | bytes
"""A local file path, or the bytes of a file (e.g. decoded from a data: URI)."""

_X264_OPTIONS = {"crf": "18", "preset": "medium"}
_AAC_BIT_RATE = 192_000
# x264's AVX-512 code paths read memory they did not write: on an AVX-512 CPU the same frames
# encode to different bytes from run to run (measured with PyAV 18 / FFmpeg 8's libx264; the
# first encode of a process nearly always differs). Its other x86 paths, frame threads
# included, give the same bytes every run, so there x264 is told the CPU's flags without it.
# x264 CPU flag -> the /proc/cpuinfo flag it needs.
_X264_CPU_FLAGS = {"MMX2": "sse", "SSE": "sse", "SSE2": "sse2", "SSE2Fast": "sse2", "SSE3": "pni", "SSSE3": "ssse3",
                   "SSE4.1": "sse4_1", "SSE4.2": "sse4_2", "LZCNT": "abm", "AVX": "avx", "FMA3": "fma",
                   "BMI1": "bmi1", "BMI2": "bmi2", "AVX2": "avx2"}  # fmt: skip


@functools.cache
def x264_options() -> dict[str, str]:
    """libx264's options for the output mp4: deterministic on this machine (see _X264_CPU_FLAGS)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: no x86 AVX-512 workaround known to be needed
        return dict(_X264_OPTIONS)
    cpu = set(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())
    if "avx512f" not in cpu:
        return dict(_X264_OPTIONS)
    asm = ",".join(name for name, flag in _X264_CPU_FLAGS.items() if flag in cpu)
    return {**_X264_OPTIONS, "x264-params": f"asm={asm}"}


def as_file(source: MediaSource) -> str | BinaryIO:
    """A path string or an in-memory file that PIL, soundfile and PyAV all accept."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return str(path)


# --- image -----------------------------------------------------------------------------------


def load_image(source: MediaSource) -> Image.Image:
    """Open an image (file or bytes) as RGB, applying its EXIF orientation."""
    with Image.open(as_file(source)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def resize_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Center-crop to the target aspect ratio, then resize (Lanczos) to exactly ``width x height``."""
    w, h = image.size
    if h * width > w * height:  # too tall: keep the full width
        crop_w, crop_h = w, int(w * height / width)
    else:
        crop_w, crop_h = int(h * width / height), h
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> ``[3, H, W]`` float32 in [-1, 1] (the video VAE's input range)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array * 2.0 - 1.0).permute(2, 0, 1).contiguous()


# --- video frames ----------------------------------------------------------------------------


def pixels_to_frames(pixels: torch.Tensor) -> np.ndarray:
    """Decoded video ``[3, F, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8 (truncating, as the reference)."""
    unit = (pixels.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1)
    return (unit.permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``[F, H, W, 3]`` uint8 frames to ``width x height`` (final output size): bilinear, with
    an anti-aliasing filter when shrinking (1920x1088 -> 960x540 would otherwise alias)."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).contiguous().numpy()


# --- audio -----------------------------------------------------------------------------------


def load_audio(source: MediaSource, sample_rate: int = VAE_SAMPLE_RATE, duration: float | None = None) -> np.ndarray:
    """Read any common audio (or video) file, or its bytes, as mono float32 at ``sample_rate``.

    With ``duration`` (seconds) the waveform is trimmed, or zero-padded, to exactly
    ``round(duration * sample_rate)`` samples.
    """
    data, rate = _read_audio(source)
    audio = librosa.to_mono(data)
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate)
    if duration is not None:
        audio = librosa.util.fix_length(audio, size=round(duration * sample_rate))
    return np.ascontiguousarray(audio, dtype=np.float32)


def probe_audio(source: MediaSource) -> float | None:
    """Duration in seconds of the first audio stream (None if the container does not say).

    Raises ValueError when there is no decodable audio.
    """
    try:
        return sf.info(as_file(source)).duration
    except sf.LibsndfileError:
        with _open_av(source) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None:
                return float(stream.duration * stream.time_base)
            return None if container.duration is None else container.duration / av.time_base


def _read_audio(source: MediaSource) -> tuple[np.ndarray, int]:
    """``([C, n] float32, rate)``: libsndfile formats via soundfile, anything else (m4a, aac, mp4...) via PyAV."""
    try:
        data, rate = sf.read(as_file(source), dtype="float32", always_2d=True)
        return data.T, rate
    except sf.LibsndfileError:
        return _decode_with_pyav(source)


def _open_av(source: MediaSource) -> av.container.InputContainer:
    """Open with PyAV; ValueError unless it holds an audio stream."""
    try:
        container = av.open(as_file(source))
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode audio: {error}") from error
    if not container.streams.audio:
        container.close()
        raise ValueError("no audio stream found")
    return container


def _decode_with_pyav(source: MediaSource) -> tuple[np.ndarray, int]:
    with _open_av(source) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # planar float, native layout and rate
        try:
            chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray() for out in resampler.resample(None)]
        except av.FFmpegError as error:
            raise ValueError(f"cannot decode audio: {error}") from error
    if not chunks:
        raise ValueError("the audio stream is empty")
    return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def resample_to_output_rate(audio: np.ndarray) -> np.ndarray:
    """51.2 kHz -> 44.1 kHz along the last axis as the release does: one FFT resample of the whole
    clip (``scipy.signal.resample``) to ``int(n * 441 / 512)`` samples (``Na * 1764`` for ``Na`` latents)."""
    num = audio.shape[-1] * OUTPUT_SAMPLE_RATE // VAE_SAMPLE_RATE
    return resample(audio, num, axis=-1).astype(np.float32)


# --- mp4 -------------------------------------------------------------------------------------


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    audio: np.ndarray | None = None,
    *,
    fps: int = FPS,
    sample_rate: int = OUTPUT_SAMPLE_RATE,
) -> Path:
    """Write ``[T, H, W, 3]`` uint8 frames (H.264, yuv420p) and optional audio (AAC) to an mp4.

    ``audio`` is ``[n]`` (mono) or ``[C, n]`` float in [-1, 1]; shorter than the video's ``T / fps``
    it is zero-padded to it, longer it is kept whole, as the release muxes it (a 5 s clip decodes
    126 audio latents, 5.04 s, under 125 frames, 5.00 s). The file is written under a temporary name in the target
    directory and renamed into place, so a failure never leaves a partial file at ``path``.
    """
    _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with av.open(tmp_name, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            video = _add_video_stream(container, frames, fps)
            sound = None
            if audio is not None:
                sound = _fit_audio(audio, min_samples=round(len(frames) * sample_rate / fps))
                audio_stream = _add_audio_stream(container, sound.shape[0], sample_rate)
            _encode_video(container, video, frames)
            if sound is not None:
                _encode_audio(container, audio_stream, sound, sample_rate)
        _chmod_like_open(tmp)  # mkstemp makes 0600; a finished clip gets the usual umask mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _chmod_like_open(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError("frames must be a uint8 array [T, H, W, 3]")
    if len(frames) == 0:
        raise ValueError("frames is empty")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {frames.shape[1]}x{frames.shape[2]}")


def _fit_audio(audio: np.ndarray, min_samples: int) -> np.ndarray:
    """``[C, max(n, min_samples)]`` float32 in [-1, 1] (zero-padded, never trimmed)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must be [n] or [C, n] with C in (1, 2), got shape {audio.shape}")
    size = max(audio.shape[-1], min_samples)
    return np.clip(librosa.util.fix_length(audio, size=size, axis=-1), -1.0, 1.0)


def _add_video_stream(container: av.container.OutputContainer, frames: np.ndarray, fps: int) -> av.VideoStream:
    stream = container.add_stream("libx264", rate=Fraction(fps), options=x264_options())
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    return stream


def _add_audio_stream(container: av.container.OutputContainer, channels: int, sample_rate: int) -> av.AudioStream:
    stream = container.add_stream("aac", rate=sample_rate, layout="mono" if channels == 1 else "stereo")
    stream.bit_rate = _AAC_BIT_RATE
    return stream


def _encode_video(container: av.container.OutputContainer, stream: av.VideoStream, frames: np.ndarray) -> None:
    for index, array in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(
    container: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray, sample_rate: int
) -> None:
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    step = stream.codec_context.frame_size or 1024
    for start in range(0, audio.shape[1], step):
        chunk = np.ascontiguousarray(audio[:, start : start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
