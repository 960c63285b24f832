"""Hosted-API contract: request validation with precise errors, defaults, response shape, resolutions."""

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf
from PIL import Image

from magihuman.api import (
    MAX_IMAGE_PIXELS,
    MAX_PROMPT_CHARS,
    SAFETY_NOTE,
    SEED_LIMIT,
    FilePolicy,
    GenerateRequest,
    GenerateResponse,
    RequestError,
    VideoFile,
    api_sampler,
    default_steps,
    to_generation_request,
)
from magihuman.clip import API_RESOLUTIONS, RESOLUTIONS
from magihuman.configs import CONFIG_DIR
from magihuman.pipeline import GenerationRequest, MagiHumanPipeline


def _png_bytes(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format="PNG")
    return buffer.getvalue()


def _wav_bytes() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(800, np.float32), 16000, format="WAV")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """The API reads media under the working directory only: work where the test files are."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def image_path(tmp_path):
    path = tmp_path / "face.png"
    path.write_bytes(_png_bytes())
    return path


@pytest.fixture()
def audio_path(tmp_path):
    path = tmp_path / "speech.wav"
    path.write_bytes(_wav_bytes())
    return path


def _request(image_path, **fields):
    return GenerateRequest.from_dict({"prompt": "A woman says hello.", "image_url": str(image_path), **fields})


def _problems(payload) -> dict:
    with pytest.raises(RequestError) as caught:
        GenerateRequest.from_dict(payload)
    return caught.value.problems


# --- valid requests --------------------------------------------------------------------------


def test_defaults(image_path):
    request = _request(image_path)
    assert request.image == image_path.read_bytes() and request.audio is None  # read once, at validation
    assert request.duration == 5.0 and request.num_frames == 125  # 126 audio latents -> 32 latent frames
    assert request.resolution == "256p" and request.spec.sr_model is None
    assert request.num_inference_steps == 8
    assert request.guidance_scale == 5.0
    assert request.enable_safety_checker is True
    assert 0 <= request.seed < SEED_LIMIT


@pytest.mark.parametrize("resolution", ["540p", "720p", "1080p"])
def test_steps_default_to_32_with_the_base_model(image_path, resolution):
    request = _request(image_path, resolution=resolution)
    assert request.num_inference_steps == 32 and request.spec.sr_model is not None


def test_explicit_values_are_kept(image_path, audio_path):
    request = _request(
        image_path,
        audio_url=str(audio_path),
        duration=1.2,
        resolution="1080p",
        num_inference_steps=12,
        guidance_scale=3,
        seed=1234,
        enable_safety_checker=False,
    )
    assert (request.audio, request.duration, request.num_frames) == (audio_path.read_bytes(), 1.2, 29)
    assert (request.num_inference_steps, request.guidance_scale, request.seed) == (12, 3.0, 1234)
    assert request.enable_safety_checker is False


def test_seed_is_random_when_absent(image_path):
    seeds = {_request(image_path).seed for _ in range(4)}
    assert len(seeds) > 1


def test_file_urls_and_data_uris(image_path, audio_path):
    assert _request(image_path.as_uri()).image == image_path.read_bytes()
    png = "data:image/png;base64," + base64.b64encode(_png_bytes()).decode()
    wav = "data:audio/wav;base64," + base64.b64encode(_wav_bytes()).decode()
    request = _request(png, audio_url=wav)
    assert request.image == _png_bytes() and request.audio == _wav_bytes()
    assert request.image_url == png
    wrapped = png[:40] + "\n" + png[40:]  # some clients wrap long base64 lines
    assert _request(wrapped).image == _png_bytes()


# --- invalid requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("prompt", "   ", "must not be empty"),
        ("prompt", 42, "must be a string"),
        ("image_url", "https://example.com/face.png", "cannot fetch https URLs offline"),
        ("image_url", "http://example.com/face.png", "cannot fetch http URLs offline"),
        ("image_url", "/no/such/face.png", "is not a readable file under the allowed media roots"),
        ("image_url", "s3://bucket/face.png", "unsupported URL scheme 's3'"),
        ("image_url", "file://server/share/face.png", "must be local"),
        ("image_url", "data:image/png;base64,@@@", "invalid base64"),
        ("image_url", "data:text/plain;base64,aGVsbG8=", "media type 'text/plain'"),
        ("image_url", "data:image/png;base64", "malformed data: URI"),
        ("image_url", "data:image/png;base64,aGVsbG8=", "not a readable image"),
        ("audio_url", "https://example.com/a.wav", "cannot fetch https URLs offline"),
        ("audio_url", 3, "must be a string"),
        ("duration", 0, "must be > 0 and <= 10 seconds"),
        ("duration", -1, "must be > 0"),
        ("duration", 10.04, "<= 10 seconds"),
        ("duration", 1.01, "whole number of frames"),
        ("duration", "5", "must be a number"),
        ("duration", True, "must be a number"),
        ("duration", float("nan"), "must be finite"),
        ("resolution", "480p", "must be one of 256p, 540p, 720p, 1080p"),
        ("resolution", ["256p"], "must be one of"),
        ("num_inference_steps", 0, "between 1 and 100"),
        ("num_inference_steps", 101, "between 1 and 100"),
        ("num_inference_steps", 8.0, "must be an integer"),
        ("guidance_scale", 0.5, "between 1 and 20"),
        ("guidance_scale", "5", "must be a number"),
        ("seed", -1, "between 0 and 2**32 - 1"),
        ("seed", 2**32, "between 0 and 2**32 - 1"),
        ("seed", 1.5, "must be an integer"),
        ("enable_safety_checker", "yes", "must be true or false"),
    ],
)
def test_each_bad_field_gets_a_precise_error(image_path, field, value, message):
    payload = {"prompt": "hi", "image_url": str(image_path), field: value}
    problems = _problems(payload)
    assert list(problems) == [field]
    assert message in problems[field]


def test_required_fields(image_path):
    assert _problems({"image_url": str(image_path)}) == {"prompt": "is required"}
    assert _problems({"prompt": "hi"}) == {"image_url": "is required"}


def test_files_that_are_not_media(image_path, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert "not a readable image" in _problems({"prompt": "hi", "image_url": str(text)})["image_url"]
    problems = _problems({"prompt": "hi", "image_url": str(image_path), "audio_url": str(image_path)})
    assert "not readable audio" in problems["audio_url"]


def test_unknown_fields_and_all_problems_are_reported_together(image_path):
    with pytest.raises(RequestError) as caught:
        GenerateRequest.from_dict({"prompt": "", "image_url": str(image_path), "fps": 30, "seed": -5})
    error = caught.value
    assert set(error.problems) == {"request", "prompt", "seed"}
    assert "unknown field(s) 'fps'" in error.problems["request"]
    assert isinstance(error, ValueError) and "seed:" in str(error) and "prompt:" in str(error)


def _png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares ``width x height`` (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_prompt_is_bounded(image_path):
    problems = _problems({"prompt": "x" * 100_000, "image_url": str(image_path)})
    assert f"is 100000 characters; at most {MAX_PROMPT_CHARS}" in problems["prompt"]
    assert _request(image_path, prompt="y" * MAX_PROMPT_CHARS).prompt == "y" * MAX_PROMPT_CHARS


@pytest.mark.parametrize(
    "data, message",
    [
        (_png_declaring(30000, 30000), "declares too many pixels"),
        (_png_declaring(8000, 6000), f"is 8000x6000 pixels; at most {MAX_IMAGE_PIXELS} pixels are accepted"),
        (_png_bytes((1, 1)), "is 1x1 pixels; expected at least 64 on each side"),
        (_png_bytes()[:60], "not a readable image"),  # truncated
    ],
    ids=["bomb", "over-cap", "1x1", "truncated"],
)
def test_images_outside_the_caps_are_request_errors(tmp_path, data, message):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    for url in (str(path), uri):
        assert message in _problems({"prompt": "hi", "image_url": url})["image_url"]


def test_audio_shorter_than_one_latent_is_refused(image_path, tmp_path):
    short = tmp_path / "click.wav"
    sf.write(short, np.zeros(160, np.float32), 16000)  # 10 ms
    problems = _problems({"prompt": "hi", "image_url": str(image_path), "audio_url": str(short)})
    assert "is 0.010 s long; expected at least 0.04 s (one audio latent)" in problems["audio_url"]


def test_files_outside_the_allowed_roots_get_one_uniform_error(tmp_path, image_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    secret = outside / "face.png"
    secret.write_bytes(_png_bytes())
    inside = tmp_path / "allowed"
    inside.mkdir()
    (inside / "link.png").symlink_to(secret)
    policy = FilePolicy.roots(inside)
    messages = {}
    urls = {"existing": secret, "missing": outside / "none.png", "not media": Path("/etc/hostname"),
            "dot-dot": inside / ".." / image_path.name, "symlink out": inside / "link.png"}  # fmt: skip
    for name, url in urls.items():
        with pytest.raises(RequestError) as caught:
            GenerateRequest.from_dict({"prompt": "hi", "image_url": str(url)}, policy)
        messages[name] = caught.value.problems["image_url"].replace(str(url), "<url>")
    assert len(set(messages.values())) == 1, messages
    assert "is not a readable file under the allowed media roots" in messages["existing"]
    # the default root is the working directory (this test's tmp_path)
    assert _request(image_path).image == image_path.read_bytes()


def test_media_size_caps(tmp_path, image_path):
    policy = FilePolicy.roots(tmp_path, max_bytes=100)
    with pytest.raises(RequestError, match=r"face.png is \d+ bytes; at most 100 bytes are accepted"):
        GenerateRequest.from_dict({"prompt": "hi", "image_url": str(image_path)}, policy)
    uri = "data:image/png;base64," + base64.b64encode(_png_bytes()).decode()
    with pytest.raises(RequestError, match=r"data: URI holds about \d+ bytes; at most 100 bytes"):
        GenerateRequest.from_dict({"prompt": "hi", "image_url": uri}, policy)


def test_non_object_payload():
    assert "must be a JSON object" in _problems(["prompt"])["request"]


# --- response --------------------------------------------------------------------------------


def test_response_shape(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x" * 1234)
    body = GenerateResponse(video=VideoFile.from_path(path), seed=7, duration=2.0).to_dict()
    assert body == {
        "video": {
            "url": path.resolve().as_uri(),
            "content_type": "video/mp4",
            "file_name": "clip.mp4",
            "file_size": 1234,
        },
        "seed": 7,
        "duration": 2.0,
        "duration_note": None,
        "safety_note": SAFETY_NOTE,
    }
    assert "not screened" in SAFETY_NOTE and "offline" in SAFETY_NOTE


# --- resolutions -----------------------------------------------------------------------------


def test_every_api_resolution_is_accepted(image_path):
    for name in API_RESOLUTIONS:
        request = _request(image_path, resolution=name)
        assert request.spec is RESOLUTIONS[name]
        assert request.num_inference_steps == default_steps(name) == (8 if name == "256p" else 32)


# --- one validator, media read once ------------------------------------------------------------


def test_a_symlink_swapped_after_validation_is_never_read(tmp_path, image_path):
    """Issue 21: the validated request carries the bytes; re-pointing the link afterwards changes nothing."""
    outside = tmp_path.parent / f"{tmp_path.name}-secret"
    outside.mkdir()
    secret = outside / "big.png"
    secret.write_bytes(_png_bytes((96, 96)))
    link = tmp_path / "face-link.png"
    link.symlink_to(image_path)
    request = _request(link)
    link.unlink()
    link.symlink_to(secret)  # now points outside the allowed root
    generation = to_generation_request(request)
    assert generation.image == request.image == image_path.read_bytes()
    # the pipeline's own check keeps the bytes as they are: nothing on disk is opened again
    assert MagiHumanPipeline.check_inputs(generation).image == image_path.read_bytes()
    with pytest.raises(RequestError, match="not a readable file under the allowed media roots"):
        _request(link)  # validated now, the swapped link is refused


def test_the_api_and_the_pipeline_share_one_validator(image_path):
    """The API refuses exactly what check_inputs refuses, under the API's field names."""
    with pytest.raises(RequestError) as caught:
        MagiHumanPipeline.check_inputs(GenerationRequest("", duration=0.5, seed=2**40,
                                                         sampler=api_sampler("540p", num_steps=1000)))  # fmt: skip
    pipeline_problems = caught.value.problems
    assert set(pipeline_problems) == {"prompt", "duration", "seed", "sampler.num_steps"}
    problems = _problems({"prompt": "", "image_url": str(image_path), "duration": 0.5, "seed": 2**40,
                          "resolution": "540p", "num_inference_steps": 1000})  # fmt: skip
    assert set(problems) == {"prompt", "duration", "seed", "num_inference_steps"}
    for field in ("prompt", "duration", "seed"):
        assert problems[field] == pipeline_problems[field]


@pytest.mark.parametrize("resolution, sampler, dit", [("256p", "dmd", "distill"), ("540p", "unipc_cfg", "base"),
                                                      ("1080p", "unipc_cfg", "base")])  # fmt: skip
def test_resolution_picks_the_sampler_groups_yaml(image_path, resolution, sampler, dit):
    """256p: DMD on the distilled DiT; higher: UniPC + CFG on the base DiT (then SR); defaults from the YAML."""
    yaml = OmegaConf.load(CONFIG_DIR / "sampler" / f"{sampler}.yaml")
    request = _request(image_path, resolution=resolution)
    generation = to_generation_request(request)
    assert (generation.sampler.name, generation.sampler.dit) == (sampler, dit) == (yaml.name, yaml.dit)
    assert request.num_inference_steps == generation.sampler.num_steps == yaml.num_steps
    assert generation.sampler.cfg_passes == yaml.cfg_passes and not generation.sampler.progress
    if sampler == "unipc_cfg":
        assert request.guidance_scale == generation.sampler.guidance_scale == yaml.guidance_scale
    custom = to_generation_request(_request(image_path, resolution=resolution, num_inference_steps=3,
                                            guidance_scale=2.5)).sampler  # fmt: skip
    assert (custom.num_steps, custom.guidance_scale) == (3, 2.5)
