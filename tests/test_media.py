"""Media I/O: image resize-crop, audio loading/resampling, and atomic H.264 + AAC mp4 writing."""

import io

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from magihuman import media


def _decode(path):
    """(frame count, (height, width), fps, audio stream or None, decoded audio samples)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = (video.codec_context.name, video.width, video.height, float(video.average_rate))
        frames = sum(1 for _ in container.decode(video=0))
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_info = None
        if audio is not None:
            seconds = float(audio.duration * audio.time_base)
            audio_info = (audio.codec_context.name, audio.rate, audio.layout.nb_channels, seconds)
    samples = 0
    if audio is not None:
        with av.open(str(path)) as container:
            samples = sum(frame.samples for frame in container.decode(audio=0))
    return frames, info, audio_info, samples


def _frames(count=25, height=64, width=96):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _tone(seconds, rate, channels=1, freq=440.0):
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels) if channels > 1 else wave


# --- image -----------------------------------------------------------------------------------


def test_resize_crop_centers_and_resizes():
    image = Image.new("RGB", (1000, 256), "red")
    image.paste(Image.new("RGB", (448, 256), "lime"), (276, 0))
    out = media.resize_crop(image, 448, 256)
    assert out.size == (448, 256)
    assert (np.asarray(out) == (0, 255, 0)).all()
    tall = media.resize_crop(Image.new("RGB", (300, 900)), 448, 256)
    assert tall.size == (448, 256)


def test_image_to_tensor_range():
    image = Image.new("RGB", (4, 2), "white")
    image.putpixel((0, 0), (0, 0, 0))
    x = media.image_to_tensor(image)
    assert x.shape == (3, 2, 4) and x.dtype == torch.float32
    assert x[:, 0, 0].tolist() == [-1, -1, -1] and x[:, 1, 1].tolist() == [1, 1, 1]


def test_load_image_from_bytes_applies_exif_orientation():
    image = Image.new("RGB", (40, 20), "blue")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    loaded = media.load_image(buffer.getvalue())
    assert loaded.size == (20, 40) and loaded.mode == "RGB"


def test_missing_image_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        media.load_image(tmp_path / "nope.png")


# --- video frames ----------------------------------------------------------------------------


def test_pixels_to_frames_maps_range_like_the_reference():
    pixels = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 4, 1, 1).expand(3, 4, 1, 1)
    frames = media.pixels_to_frames(pixels)
    assert frames.shape == (4, 1, 1, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 127, 255, 255]


def test_resize_frames_changes_only_the_size():
    frames = np.full((2, 8, 16, 3), 200, dtype=np.uint8)
    out = media.resize_frames(frames, 16, 10)
    assert out.shape == (2, 10, 16, 3) and out.dtype == np.uint8
    assert np.all(np.abs(out.astype(int) - 200) <= 1)


def test_downsampling_is_anti_aliased():
    """1920x1088 -> 960x540 (the API's 540p from the 1080p SR path): a one-pixel checkerboard
    averages to grey instead of aliasing into stripes."""
    board = ((np.indices((1088, 1920)).sum(0) % 2) * 255).astype(np.uint8)
    out = media.resize_frames(np.repeat(board[None, ..., None], 3, axis=3), 960, 540)
    assert out.shape == (1, 540, 960, 3)
    assert np.abs(out[0, 2:-2, 2:-2].astype(int) - 127).max() <= 2


# --- audio -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_load_audio_common_formats_resampled_and_padded(tmp_path, suffix):
    path = tmp_path / f"speech.{suffix}"
    sf.write(path, _tone(0.5, 22050, channels=2).T, 22050)
    audio = media.load_audio(path, duration=1.0)
    assert audio.dtype == np.float32 and audio.shape == (media.VAE_SAMPLE_RATE,)
    assert np.abs(audio[: media.VAE_SAMPLE_RATE // 4]).max() > 0.3  # the tone
    assert np.abs(audio[-media.VAE_SAMPLE_RATE // 4 :]).max() == 0  # zero padding


def test_load_audio_from_m4a_via_pyav(tmp_path):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(_tone(0.5, 16000)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    audio = media.load_audio(path, sample_rate=16000, duration=0.25)
    assert audio.shape == (4000,)
    assert media.probe_audio(path) == pytest.approx(0.5, abs=0.07)


def test_load_audio_mixes_to_mono_and_trims(tmp_path):
    stereo = _tone(1.0, 51200, channels=2)
    stereo[1] *= -1  # opposite channels cancel in the mono mix
    buffer = io.BytesIO()
    sf.write(buffer, stereo.T, 51200, format="WAV", subtype="FLOAT")
    audio = media.load_audio(buffer.getvalue(), duration=0.25)
    assert audio.shape == (12800,)
    assert np.abs(audio).max() < 1e-6


def test_unreadable_audio_is_reported(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"definitely not audio" * 50)
    with pytest.raises(ValueError):
        media.load_audio(path)
    with pytest.raises(FileNotFoundError):
        media.load_audio(tmp_path / "missing.wav")


def test_resample_51k2_to_44k1_keeps_pitch_and_length():
    tone = _tone(1.0, media.VAE_SAMPLE_RATE, freq=1000.0)
    out = media.resample_to_output_rate(tone)
    assert out.shape == (44100,) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 44100 / out.size == pytest.approx(1000.0, abs=1.0)
    assert media.resample_to_output_rate(np.zeros((2, 26 * 2048), np.float32)).shape == (2, 26 * 1764)


# --- mp4 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_mp4_decodes_with_expected_video_and_audio(tmp_path, channels):
    path = tmp_path / "out" / "clip.mp4"
    written = media.write_mp4(path, _frames(), _tone(1.3, 44100, channels=channels))
    assert written == path and path.is_file()
    frames, video, audio, samples = _decode(path)
    assert frames == 25
    assert video == ("h264", 96, 64, 25.0)
    assert audio[:3] == ("aac", 44100, channels)
    # The audio is kept whole (not trimmed to the video's 1 s), as the release muxes it; the
    # decoder may emit the padding of the last AAC frame.
    assert 57330 <= samples < 57330 + 1024
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"]


def test_mp4_pads_short_audio_and_allows_no_audio(tmp_path):
    media.write_mp4(tmp_path / "short.mp4", _frames(10), _tone(0.1, 44100))
    assert _decode(tmp_path / "short.mp4")[2][3] == pytest.approx(0.4)
    media.write_mp4(tmp_path / "silent.mp4", _frames(10))
    frames, _, audio, _ = _decode(tmp_path / "silent.mp4")
    assert frames == 10 and audio is None


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous result")

    def broken(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(media, "_encode_audio", broken)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        media.write_mp4(path, _frames(), _tone(1.0, 44100))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert path.read_bytes() == b"previous result"


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((5, 63, 64, 3), np.uint8), "even"),
        (np.zeros((5, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((0, 64, 64, 3), np.uint8), "empty"),
    ],
)
def test_bad_frames_are_rejected_before_writing(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        media.write_mp4(tmp_path / "clip.mp4", frames)
    assert list(tmp_path.iterdir()) == []


def test_bad_audio_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="audio must be"):
        media.write_mp4(tmp_path / "clip.mp4", _frames(5), np.zeros((3, 100), np.float32))
    assert list(tmp_path.iterdir()) == []


def _busy_clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames x264 must work on (moving blocks plus noise) and a tone with noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (32, 56, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.stack([np.roll(blocks, 3 * t, axis=1) ^ rng.integers(0, 24, blocks.shape, dtype=np.uint8)
                       for t in range(25)])  # fmt: skip
    audio = 0.3 * np.sin(np.arange(44_100) / 7) + 0.05 * rng.standard_normal(44_100)
    return frames, audio.astype(np.float32)


_WRITE_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from magihuman import media
from tests.test_media import _busy_clip
media.write_mp4(Path(sys.argv[1]), *_busy_clip())
"""


def test_the_same_clip_gives_the_same_bytes(tmp_path):
    """Same frames and audio -> byte-identical mp4, in this process and in a fresh one (whose
    first encode is where x264's AVX-512 paths went astray)."""
    import subprocess
    import sys
    from pathlib import Path

    frames, audio = _busy_clip()
    written = [media.write_mp4(tmp_path / f"{i}.mp4", frames, audio).read_bytes() for i in range(3)]
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, str(tmp_path / "fresh.mp4")], cwd=repo,
                   check=True, timeout=300)  # fmt: skip
    written.append((tmp_path / "fresh.mp4").read_bytes())
    assert all(w == written[0] for w in written), [len(w) for w in written]
    with av.open(str(tmp_path / "0.mp4")) as container:
        assert "creation_time" not in container.metadata  # nothing that varies with the clock


def test_x264_is_told_the_cpu_without_avx512(monkeypatch):
    """On an AVX-512 CPU x264 gets the CPU's other flags (no AVX512: its nondeterministic paths), elsewhere nothing."""
    cpuinfo = {"avx512": "flags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 avx512f\n",
               "avx2": "flags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma bmi1\n"}  # fmt: skip
    real_read = media.Path.read_text
    for cpu, text in cpuinfo.items():

        def read_text(path, *args, text=text, **kwargs):
            return text if str(path) == "/proc/cpuinfo" else real_read(path, *args, **kwargs)

        monkeypatch.setattr(media.Path, "read_text", read_text)
        media.x264_options.cache_clear()
        options = media.x264_options()
        if cpu == "avx512":
            assert options["x264-params"] == "asm=MMX2,SSE,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,AVX2"
        else:
            assert "x264-params" not in options
    media.x264_options.cache_clear()
