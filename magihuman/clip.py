"""The one source of clip arithmetic: frame rate, lengths for a duration, tokens, resolutions.

The release counts a clip in **audio latents**: 25 per second plus one (``num_frames`` in
the public code; 126 for 5 s). The video latent has ``(Na - 1) // 4 + 1`` frames (32 for
5 s) and decodes to ``4 (T - 1) + 1`` video frames (125 for 5 s, i.e. exactly 5.00 s at
25 fps). In A2V the release takes ``Na`` from the encoded speech instead of the duration;
:meth:`ClipShape` covers both.

Sizes are ``(height, width)`` in pixels. The base stage always runs at 448x256; an
optional SR stage runs a second DiT at its own size; the decoded frames are then resized
to the size written to the mp4 (SPEC sections 2 and 4).
"""

from __future__ import annotations

from dataclasses import dataclass

FPS = 25  # video frames per second; also audio latents per second
VAE_STRIDE = (4, 16, 16)  # (t, h, w) of the Wan2.2 video VAE
PATCH = (1, 2, 2)  # (t, h, w) patch of the video latent
FRAME_RECEPTIVE_FIELD = 11  # local attention: latent frame i sees frames [i - 11, i + 11]
DEFAULT_TEXT_TOKENS = 300  # a typical prompt after trimming (the encoder pads to 640)


# ---------------------------------------------------------------------------------------
# Lengths.


def audio_latents(seconds: float) -> int:
    """Audio latents of a clip of ``seconds``: ``25 s + 1``. ``seconds`` must be a whole
    number of 25 fps frames (fractional seconds such as 1.2 are fine)."""
    frames = seconds * FPS
    if not seconds > 0 or abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"duration must be > 0 and a whole number of frames at {FPS} fps "
                         f"(a multiple of {1 / FPS:g} s), got {seconds:g}")  # fmt: skip
    return round(frames) + 1


@dataclass(frozen=True)
class ClipShape:
    """The lengths of one clip, all derived from its number of audio latents."""

    num_audio: int

    def __post_init__(self) -> None:
        if self.num_audio < 1:
            raise ValueError(f"a clip needs at least 1 audio latent, got {self.num_audio}")

    @classmethod
    def from_seconds(cls, seconds: float) -> ClipShape:
        return cls(audio_latents(seconds))

    @property
    def latent_frames(self) -> int:
        """Video latent frames: ``(Na - 1) // 4 + 1`` (5 s -> 32)."""
        return (self.num_audio - 1) // VAE_STRIDE[0] + 1

    @property
    def video_frames(self) -> int:
        """Frames the video VAE decodes: ``4 (T - 1) + 1`` (5 s -> 125)."""
        return VAE_STRIDE[0] * (self.latent_frames - 1) + 1

    @property
    def seconds(self) -> float:
        """Length of the decoded video (and of the muxed audio)."""
        return self.video_frames / FPS


def clip_shape(seconds: float) -> ClipShape:
    return ClipShape.from_seconds(seconds)


# ---------------------------------------------------------------------------------------
# Tokens.


def latent_size(width: int, height: int) -> tuple[int, int]:
    """Video latent ``(H, W)`` of a pixel size: pixels / 16 (448x256 -> 16x28)."""
    if height % VAE_STRIDE[1] or width % VAE_STRIDE[2]:
        raise ValueError(f"{width}x{height} is not a multiple of the VAE stride {VAE_STRIDE[1:]}")
    return height // VAE_STRIDE[1], width // VAE_STRIDE[2]


@dataclass(frozen=True)
class SampleTokens:
    """Token counts of one packed sample: the video patch grid plus audio and text lengths."""

    grid: tuple[int, int, int]  # (latent frames, H/2, W/2) after the 2x2 patch
    num_audio: int
    num_text: int

    @property
    def frame_tokens(self) -> int:
        return self.grid[1] * self.grid[2]

    @property
    def num_video(self) -> int:
        return self.grid[0] * self.frame_tokens

    @property
    def length(self) -> int:
        return self.num_video + self.num_audio + self.num_text


def clip_tokens(seconds: float, width: int, height: int, text_tokens: int = DEFAULT_TEXT_TOKENS) -> SampleTokens:
    """Token counts of one sample for a clip of ``seconds`` at ``width x height`` pixels."""
    shape = clip_shape(seconds)
    h, w = latent_size(width, height)
    if h % PATCH[1] or w % PATCH[2]:
        raise ValueError(f"latent {h}x{w} of {width}x{height} is not even; the 2x2 patch needs it")
    return SampleTokens(grid=(shape.latent_frames, h // PATCH[1], w // PATCH[2]), num_audio=shape.num_audio,
                        num_text=text_tokens)  # fmt: skip


def resolution_tokens(name: str, seconds: float, text_tokens: int = DEFAULT_TEXT_TOKENS) -> SampleTokens:
    """:func:`clip_tokens` of the last DiT stage of resolution ``name`` (SR if it has one)."""
    height, width = resolution(name).dit_size
    return clip_tokens(seconds, width, height, text_tokens)


# ---------------------------------------------------------------------------------------
# Resolutions.

BASE_SIZE = (256, 448)


@dataclass(frozen=True)
class Resolution:
    name: str
    sr_model: str | None  # DiT checkpoint directory of the SR stage, or None (base only)
    sr_size: tuple[int, int] | None  # SR pixel size (a multiple of 32 in both axes)
    output_size: tuple[int, int]  # written to the mp4
    base_size: tuple[int, int] = BASE_SIZE

    def __post_init__(self) -> None:
        for size in (self.base_size, self.sr_size):
            if size is not None and any(s % 32 for s in size):
                raise ValueError(f"{self.name}: {size} is not a multiple of 32 (16x VAE stride x 2x2 patch)")

    @property
    def dit_size(self) -> tuple[int, int]:
        """Pixel size of the last DiT stage (and of the decoded frames before resizing)."""
        return self.sr_size or self.base_size


API_RESOLUTIONS: tuple[str, ...] = ("256p", "540p", "720p", "1080p")  # the hosted API's values, in size order

RESOLUTIONS: dict[str, Resolution] = {
    r.name: r
    for r in (
        # The hosted API's resolutions: 540p and 720p "reuse that sharper 1080p SR path and
        # downsample to the requested output size" (anti-aliased, see media.resize_frames).
        Resolution("256p", sr_model=None, sr_size=None, output_size=BASE_SIZE),
        Resolution("540p", sr_model="1080p_sr", sr_size=(1088, 1920), output_size=(540, 960)),
        Resolution("720p", sr_model="1080p_sr", sr_size=(1088, 1920), output_size=(720, 1280)),
        Resolution("1080p", sr_model="1080p_sr", sr_size=(1088, 1920), output_size=(1088, 1920)),
        # The release's named SR paths: the 540p SR model written as is (the paper's 540p row).
        Resolution("540p_sr", sr_model="540p_sr", sr_size=(512, 896), output_size=(512, 896)),
    )
}


def resolution(name: str) -> Resolution:
    try:
        return RESOLUTIONS[name]
    except KeyError:
        raise ValueError(f"unknown resolution {name!r}; expected one of {list(RESOLUTIONS)}") from None
