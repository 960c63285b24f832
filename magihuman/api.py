"""The hosted-API contract (fal-ai/davinci-magihuman), validated for offline use.

Request fields: ``prompt`` (required), ``image_url`` (required), ``audio_url``, ``duration``,
``resolution``, ``num_inference_steps``, ``guidance_scale``, ``seed``, ``enable_safety_checker``.
Media URLs may be a local path, a ``file://`` URL or a ``data:`` URI; http(s) URLs are rejected
because nothing can be fetched offline. Local paths are read only under the allowed roots of a
:class:`FilePolicy` (default: the working directory), and every path outside them, missing or
not, gets the same error, so a request cannot probe which files exist.

:meth:`GenerateRequest.from_dict` parses the JSON schema (types, URL schemes, data: URIs, the
API's resolutions), maps the request onto the pipeline's :class:`GenerationRequest` and validates
that with :meth:`MagiHumanPipeline.check_inputs`, the one validator every entry point uses; media
are read once, there, and the request carries their bytes. Which sampler a resolution runs, and
its default steps and guidance, are the sampler groups' YAML (:func:`api_sampler`).

Response: ``{"video": {"url", "content_type", "file_name", "file_size"}, "seed", "duration",
"duration_note", "safety_note"}``; ``duration_note`` says why a clip is shorter than requested
(A2V: the given speech sets the length), else it is null.
No safety-checker model is available offline: ``enable_safety_checker`` is accepted for
compatibility, and every response says the video was not screened.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import unquote, unquote_to_bytes, urlparse
from urllib.request import url2pathname

from magihuman import inputs
from magihuman.clip import API_RESOLUTIONS, ClipShape, Resolution, resolution
from magihuman.configs import build_group
from magihuman.inputs import (  # noqa: F401 - the API's caps, re-exported for its clients
    GUIDANCE_RANGE,
    LOCAL_FILES,
    MAX_DURATION,
    MAX_IMAGE_PIXELS,
    MAX_MEDIA_BYTES,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MIN_AUDIO_SECONDS,
    MIN_IMAGE_SIDE,
    SEED_LIMIT,
    FilePolicy,
    Invalid,
    RequestError,
)

if TYPE_CHECKING:
    from magihuman.pipeline import GenerationRequest, GenerationResult, MagiHumanPipeline
    from magihuman.sampling import SamplerConfig

SAFETY_NOTE = (
    "No safety checker is available offline: enable_safety_checker is accepted for API "
    "compatibility, but this video was not screened."
)


# --- which sampler a resolution runs ---------------------------------------------------------

DISTILLED_RESOLUTION = "256p"


def api_sampler(resolution: str, **overrides: Any) -> SamplerConfig:
    """The hosted API's sampler for ``resolution``, built from the sampler group's YAML: 256p runs
    ``dmd`` (the distilled DiT, no CFG), higher resolutions ``unipc_cfg`` (the base DiT with CFG,
    then the SR stage). ``overrides`` replace YAML keys (``num_steps``, ``guidance_scale``)."""
    name = "dmd" if resolution == DISTILLED_RESOLUTION else "unipc_cfg"
    return build_group("sampler", name, progress=False, **overrides)


def default_steps(resolution: str) -> int:
    """Steps of ``resolution``'s sampler YAML: 8 at 256p (DMD), 32 otherwise (UniPC + CFG)."""
    return api_sampler(resolution).num_steps


# --- request ---------------------------------------------------------------------------------

# check_inputs' field names -> the API's
_API_FIELDS = {"image": "image_url", "audio": "audio_url", "sampler.num_steps": "num_inference_steps",
               "sampler.guidance_scale": "guidance_scale"}  # fmt: skip


@dataclass(frozen=True)
class GenerateRequest:
    """A validated request with every default resolved (seed and steps included).

    Build it with ``GenerateRequest.from_dict``. ``image`` / ``audio`` are the bytes the URLs point
    at, read once at validation; ``generation`` is the pipeline request they map onto, already
    validated by ``MagiHumanPipeline.check_inputs``.
    """

    prompt: str
    image_url: str
    image: bytes
    audio_url: str | None
    audio: bytes | None
    duration: float
    resolution: str
    num_inference_steps: int
    guidance_scale: float
    seed: int
    enable_safety_checker: bool
    generation: GenerationRequest

    @property
    def spec(self) -> Resolution:
        """Sizes and SR stage of ``resolution`` (``magihuman.clip``)."""
        return resolution(self.resolution)

    @property
    def clip(self) -> ClipShape:
        """Audio latents, latent frames and video frames of ``duration``."""
        return ClipShape.from_seconds(self.duration)

    @property
    def num_frames(self) -> int:
        """Video frames of the mp4: ``4 (T - 1) + 1`` for ``T`` latent frames (5 s -> 125)."""
        return self.clip.video_frames

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], files: FilePolicy | None = None) -> GenerateRequest:
        """Validate a JSON-like payload; raises ``RequestError`` naming every bad field.

        Local media paths are read under ``files`` (default: the working directory only).
        """
        from magihuman.pipeline import GenerationRequest, MagiHumanPipeline

        files = files or FilePolicy.working_directory()
        if not isinstance(payload, Mapping):
            raise RequestError({"request": f"must be a JSON object, got {type(payload).__name__}"})
        problems = inputs.Problems()
        unknown = sorted(set(payload) - _FIELDS)
        if unknown:
            allowed = ", ".join(sorted(_FIELDS))
            problems["request"] = f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {allowed}"

        def field(name: str, parse, default=None):
            if name not in payload or payload[name] is None:
                if default is _REQUIRED:
                    problems[name] = "is required"
                return None if default is _REQUIRED else default
            return problems.check(name, parse, payload[name])

        # The schema: types, URL schemes and data: URIs, the API's resolutions. Value rules are check_inputs'.
        prompt = field("prompt", _string, _REQUIRED)
        image = field("image_url", lambda v: _media(v, "image", files), _REQUIRED)
        audio = field("audio_url", lambda v: _media(v, "audio", files))
        duration = field("duration", inputs.number)  # None: the pipeline request's default (5 s)
        name = field("resolution", lambda v: inputs.resolution(v, API_RESOLUTIONS), DISTILLED_RESOLUTION)
        steps = field("num_inference_steps", inputs.steps)  # in range: the sampler refuses 0 steps itself
        guidance = field("guidance_scale", inputs.guidance)  # in range even where unused (one pass at 256p)
        seed = field("seed", inputs.integer)
        safety = field("enable_safety_checker", inputs.boolean, True)
        overrides = {k: v for k, v in (("num_steps", steps), ("guidance_scale", guidance)) if v is not None}
        sampler = api_sampler(name or DISTILLED_RESOLUTION, **overrides)
        request = GenerationRequest(
            prompt=prompt if prompt is not None else "", image=image, audio=audio,
            resolution=name or DISTILLED_RESOLUTION, sampler=sampler,
            seed=seed if seed is not None else secrets.randbelow(inputs.SEED_LIMIT),
            **({} if duration is None else {"duration": duration}),
        )  # fmt: skip
        try:
            request = MagiHumanPipeline.check_inputs(request, files=files)
        except RequestError as error:  # fields the schema already refused keep the schema's message
            for key, why in error.problems.items():
                problems.setdefault(_API_FIELDS.get(key, key), why)
        problems.raise_any()
        return cls(
            prompt=request.prompt, image_url=payload["image_url"], image=request.image,
            audio_url=payload.get("audio_url"), audio=request.audio, duration=request.duration,
            resolution=request.resolution, num_inference_steps=sampler.num_steps,
            guidance_scale=sampler.guidance_scale, seed=request.seed, enable_safety_checker=safety,
            generation=request,
        )  # fmt: skip


_REQUIRED = object()
_FIELDS = frozenset(
    {
        "prompt",
        "image_url",
        "audio_url",
        "duration",
        "resolution",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "enable_safety_checker",
    }
)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {type(value).__name__}")
    return value


def _media(value: Any, kind: str, files: FilePolicy) -> bytes:
    """The bytes a path / file:// URL / data: URI points at (a local file read once, under ``files``)."""
    if not isinstance(value, str):
        raise Invalid(f"must be a string (local path, file:// URL or data: URI), got {type(value).__name__}")
    if not value.strip():
        raise Invalid("must not be empty")
    scheme = urlparse(value).scheme.lower()
    if scheme in ("http", "https"):
        raise Invalid(
            f"cannot fetch {scheme} URLs offline ({_short(value)}); download the file and pass a local path, "
            "a file:// URL or a data: URI"
        )
    if scheme == "data":
        return _data_uri(value, kind, files.max_bytes)
    if scheme == "file":
        parsed = urlparse(value)
        if parsed.netloc not in ("", "localhost"):
            raise Invalid(f"file:// URL must be local, got host {parsed.netloc!r}")
        path = Path(url2pathname(unquote(parsed.path)))
    elif "://" in value:
        raise Invalid(
            f"unsupported URL scheme {scheme!r} ({_short(value)}); use a local path, file:// URL or data: URI"
        )
    else:
        path = Path(value).expanduser()
    return files.read(path)


def _data_uri(value: str, kind: str, max_bytes: int) -> bytes:
    header, comma, payload = value[len("data:") :].partition(",")
    if not comma:
        raise Invalid("malformed data: URI (no ',' before the payload)")
    parts = [p.strip().lower() for p in header.split(";")]
    mime = parts[0]
    allowed = ("image/",) if kind == "image" else ("audio/", "video/", "application/octet-stream")
    if mime and not mime.startswith(allowed):
        expected = " or ".join(a.rstrip("/") + "/*" for a in allowed)
        raise Invalid(f"data: URI has media type {mime!r}; expected {expected}")
    if len(payload) * 3 // 4 > max_bytes:  # checked before decoding: base64 is 4 characters per 3 bytes
        raise Invalid(f"data: URI holds about {len(payload) * 3 // 4} bytes; at most {max_bytes} bytes are accepted")
    try:
        if "base64" in parts[1:]:  # tolerate percent-encoding and line breaks some clients add
            data = base64.b64decode("".join(unquote(payload).split()), validate=True)
        else:
            data = unquote_to_bytes(payload)
    except binascii.Error as error:
        raise Invalid(f"data: URI has invalid base64 ({error})") from None
    if not data:
        raise Invalid("data: URI is empty")
    if len(data) > max_bytes:
        raise Invalid(f"data: URI holds {len(data)} bytes; at most {max_bytes} bytes are accepted")
    return data


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- response --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFile:
    url: str
    file_name: str
    file_size: int
    content_type: str = "video/mp4"

    @classmethod
    def from_path(cls, path: str | Path) -> VideoFile:
        """Describe a written mp4 (``url`` is its file:// URL)."""
        path = Path(path).resolve()
        return cls(url=path.as_uri(), file_name=path.name, file_size=path.stat().st_size)


@dataclass(frozen=True)
class GenerateResponse:
    video: VideoFile
    seed: int
    duration: float  # seconds the clip covers
    duration_note: str | None = None  # set when the clip is shorter than requested (A2V: the speech sets it)
    safety_note: str = SAFETY_NOTE

    @classmethod
    def of(cls, result: GenerationResult, requested_duration: float) -> GenerateResponse:
        """The response to a finished generation (its ``path`` written) of ``requested_duration`` seconds."""
        note = None
        if result.duration < requested_duration:
            note = (f"the clip is {result.duration:g} s, shorter than the requested {requested_duration:g} s: "
                    "its length follows the given audio, which is cut to the request and never padded")  # fmt: skip
        return cls(VideoFile.from_path(result.path), seed=result.seed, duration=result.duration, duration_note=note)

    def to_dict(self) -> dict[str, Any]:
        """The JSON response body."""
        body = asdict(self)
        body["video"] = {key: body["video"][key] for key in ("url", "content_type", "file_name", "file_size")}
        return body


# --- serving ---------------------------------------------------------------------------------


def to_generation_request(request: GenerateRequest) -> GenerationRequest:
    """The pipeline request of an API request (validated, media bytes included): 256p runs the
    distilled DiT (DMD, no CFG); higher resolutions the base DiT (UniPC + CFG at ``guidance_scale``)
    and the SR stage (:func:`api_sampler`)."""
    return request.generation


def serve(
    payload: Any, pipeline: MagiHumanPipeline, output_dir: str | Path, files: FilePolicy | None = None
) -> dict[str, Any]:
    """Validate a request body, generate, and return the response body.

    Invalid input (including an unwritable ``output_dir``) raises :class:`RequestError` before
    any work, so no file is written. Local media are read under ``files`` (default: the working
    directory only). Each response's file is named by a fresh request id and created
    exclusively, so no request can overwrite another's video.
    """
    request = GenerateRequest.from_dict(payload, files)
    try:
        directory = inputs.writable_dir(Path(output_dir))
    except Invalid as why:
        raise RequestError({"output_dir": str(why)}) from None
    output = _reserve(directory)
    try:
        result = pipeline.generate(to_generation_request(request), output=output)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return GenerateResponse.of(result, request.duration).to_dict()


def _reserve(directory: Path) -> Path:
    """A new, empty ``magihuman-<request id>.mp4`` created with O_EXCL: the name is this request's
    alone (the finished clip is renamed over this placeholder, never over another file)."""
    while True:
        path = directory / f"magihuman-{uuid.uuid4().hex}.mp4"
        try:
            with open(path, "x"):
                return path
        except FileExistsError:  # a uuid4 collision: draw again
            continue
