"""The field rules of a generation request: one set, used by ``MagiHumanPipeline.check_inputs``.

Every entry point (the API, ``magihuman-generate``, the sweep, ``generate`` itself) validates
through :meth:`magihuman.pipeline.MagiHumanPipeline.check_inputs`, which applies these rules
and names every bad field at once (:class:`RequestError`). Media are read here, once: local
files only under the roots of a :class:`FilePolicy` and within its size cap, and a validated
request carries the bytes, so nothing swapped in on disk afterwards is ever read.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from PIL import Image

from magihuman.clip import FPS, RESOLUTIONS, ClipShape
from magihuman.media import MediaSource, as_file, load_audio, probe_audio

MAX_DURATION = 10.0
"""Seconds. Hosted MagiHuman services offer 5-10 s clips and the public examples use 4-10 s;
longer clips are outside what the model is known to handle."""
MAX_STEPS = 100
GUIDANCE_RANGE = (1.0, 20.0)
SEED_LIMIT = 2**32
MAX_PROMPT_CHARS = 10_000
"""The text encoder reads the first 640 tokens (about 2,500 characters of English); a longer
prompt is cut to them before encoding, and one past this cap is refused rather than tokenized."""
MAX_MEDIA_BYTES = 64 * 2**20
"""Size cap of one image or audio input (a data: URI's decoded bytes, or a local file)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Pixel cap of the reference image, checked from its header before decoding (a small PNG
can declare 30000x30000); it is resized to at most 1920x1088 anyway."""
MIN_IMAGE_SIDE = 64
MIN_AUDIO_SECONDS = 1 / FPS
"""One audio latent (one latent frame of the audio VAE): shorter audio encodes to nothing."""


class RequestError(ValueError):
    """Invalid request; ``problems`` maps each bad field to what is wrong with it."""

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("invalid request: " + "; ".join(f"{field}: {why}" for field, why in self.problems.items()))


class Invalid(Exception):
    """One field's problem, raised by a rule below and collected into a :class:`RequestError`."""


class Problems(dict):
    """Field -> problem, filled by :meth:`check`; :meth:`raise_any` raises them all at once."""

    def check(self, field: str, rule, value):
        """``rule(value)``, or None with the field's problem noted."""
        try:
            return rule(value)
        except Invalid as why:
            self[field] = str(why)
            return None

    def raise_any(self) -> None:
        if self:
            raise RequestError(self)


@dataclass(frozen=True)
class FilePolicy:
    """Which local media files a request may read, and how large a media input may be.

    ``allowed_roots=None`` reads any path (the command line and the sweep, whose files are the
    user's own); the API serves with :meth:`working_directory` unless given other roots.
    """

    allowed_roots: tuple[Path, ...] | None
    max_bytes: int = MAX_MEDIA_BYTES

    @classmethod
    def working_directory(cls) -> FilePolicy:
        return cls(allowed_roots=(Path.cwd(),))

    @classmethod
    def roots(cls, *roots: str | Path, max_bytes: int = MAX_MEDIA_BYTES) -> FilePolicy:
        return cls(allowed_roots=tuple(Path(r) for r in roots), max_bytes=max_bytes)

    def check(self, path: Path) -> Path:
        """``path`` resolved, if it is a readable file within the roots and the size cap."""
        resolved = path.resolve()
        if self.allowed_roots is not None:
            roots = [r.resolve() for r in self.allowed_roots]
            # One message for outside, missing and unreadable: nothing about a file's existence leaks.
            if not (any(resolved.is_relative_to(r) for r in roots) and resolved.is_file()
                    and os.access(resolved, os.R_OK)):  # fmt: skip
                raise Invalid(f"{path} is not a readable file under the allowed media roots ({self._where(roots)})")
        elif not resolved.is_file():
            raise Invalid(f"file not found: {path}")
        self.check_size(path, resolved.stat().st_size)
        return resolved

    def read(self, path: Path) -> bytes:
        """The bytes of ``path``, read once after :meth:`check`: the file opened is the resolved one
        (never through a link again), must still be a regular file, and is read to the size cap
        only, so a file swapped or grown after the check is refused, never read past the cap."""
        resolved = self.check(path)
        try:
            fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as error:
            raise Invalid(f"cannot read {path} ({error.strerror or error})") from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise Invalid(f"{path} is not a regular file")
            data = file.read(self.max_bytes + 1)
        self.check_size(path, len(data))
        return data

    def check_size(self, what: Any, size: int) -> None:
        """Refuse ``size`` bytes past the cap; the message starts with ``what`` when given."""
        if size > self.max_bytes:
            raise Invalid(f"{f'{what} ' if what else ''}is {size} bytes; at most {self.max_bytes} bytes are accepted")

    @staticmethod
    def _where(roots: list[Path]) -> str:
        return ", ".join(str(r) for r in roots)


LOCAL_FILES = FilePolicy(allowed_roots=None)
"""The command line's policy: any readable local file, within the size cap."""


# --- field rules: each returns the parsed value or raises Invalid ------------------------------


def prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise Invalid(f"must not be empty, got {value!r}")
    if len(value) > MAX_PROMPT_CHARS:
        raise Invalid(
            f"is {len(value)} characters; at most {MAX_PROMPT_CHARS} are accepted "
            "(the text encoder reads only the first 640 tokens)"
        )
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise Invalid(f"must be finite, got {value}")
    return float(value)


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer, got {value!r}")
    return value


def duration(value: Any) -> float:
    seconds = number(value)
    if not 0 < seconds <= MAX_DURATION:
        raise Invalid(f"must be > 0 and <= {MAX_DURATION:g} seconds, got {seconds:g}")
    try:
        ClipShape.from_seconds(seconds)
    except ValueError as why:
        raise Invalid(str(why).removeprefix("duration ")) from None
    return seconds


def resolution(value: Any, names=RESOLUTIONS) -> str:
    """One of ``names`` (default: every resolution of ``magihuman.clip``, the release's SR paths too)."""
    if not isinstance(value, str) or value not in names:
        raise Invalid(f"must be one of {', '.join(names)}, got {value!r}")
    return value


def steps(value: Any) -> int:
    count = integer(value)
    if not 1 <= count <= MAX_STEPS:
        raise Invalid(f"must be between 1 and {MAX_STEPS}, got {count}")
    return count


def guidance(value: Any) -> float:
    scale = number(value)
    low, high = GUIDANCE_RANGE
    if not low <= scale <= high:
        raise Invalid(f"must be between {low:g} and {high:g}, got {scale:g}")
    return scale


def seed(value: Any) -> int:
    drawn = integer(value)
    if not 0 <= drawn < SEED_LIMIT:
        raise Invalid(f"must be between 0 and 2**32 - 1, got {drawn}")
    return drawn


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {value!r}")
    return value


def media_bytes(value: Any, files: FilePolicy) -> bytes:
    """A media input read once: bytes within the cap, or a local file path read under ``files``."""
    if isinstance(value, bytes):
        files.check_size(None, len(value))
        return value
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise Invalid(f"must be a file path, got {value!r}")
    return files.read(Path(value).expanduser())


def image(source: bytes) -> bytes:
    """A decodable image within the pixel caps (checked from the header, before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower cap follows
            with Image.open(as_file(source)) as opened:
                width, height = opened.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise Invalid(f"is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels are accepted")
                if min(width, height) < MIN_IMAGE_SIDE:
                    raise Invalid(f"is {width}x{height} pixels; expected at least {MIN_IMAGE_SIDE} on each side")
                opened.load()  # decode it all: a truncated file fails here, not after the model loads
    except Image.DecompressionBombError as error:
        raise Invalid(f"declares too many pixels ({error}); at most {MAX_IMAGE_PIXELS} pixels are accepted") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise Invalid(f"is not a readable image ({error})") from None
    return source


def audio(source: MediaSource) -> MediaSource:
    """Decodable audio at least one audio latent long."""
    try:
        seconds = probe_audio(source)
        if seconds is None:  # the container does not say: decode it
            seconds = len(load_audio(source, sample_rate=16_000)) / 16_000
    except (OSError, ValueError, RuntimeError) as error:
        raise Invalid(f"is not readable audio ({error})") from None
    if seconds < MIN_AUDIO_SECONDS:
        raise Invalid(f"is {seconds:.3f} s long; expected at least {MIN_AUDIO_SECONDS:g} s (one audio latent)")
    return source


def output(value: Any) -> Path:
    """An mp4 path in a directory that takes new files."""
    path = Path(value)
    if path.is_dir():
        raise Invalid(f"{path} is a directory; expected a file path")
    writable_dir(path.parent)
    return path


def writable_dir(directory: Path) -> Path:
    """``directory``, made if missing, once a file could be created in it (checked by making one)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise Invalid(f"cannot write in {directory} ({error.strerror or error})") from None
    return directory
