"""Every entry point validates before any model loads: the command line and the sweep build
their request through the one validator (``build_request`` -> ``MagiHumanPipeline.check_inputs``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from PIL import Image

from magihuman.api import RequestError
from magihuman.harness.prompts import build_request

REPO = Path(__file__).resolve().parents[1]
CONFIGS = str(REPO / "configs")


def request_for(tmp_path: Path, *overrides: str, output: Path | None = None):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("generate", [f"prompts.media_dir={tmp_path / 'media'}", *overrides])
    return build_request(cfg, output=output or tmp_path / "clip.mp4")


def problems(tmp_path: Path, *overrides: str, output: Path | None = None) -> dict[str, str]:
    with pytest.raises(RequestError) as caught:
        request_for(tmp_path, *overrides, output=output)
    return caught.value.problems


@pytest.fixture()
def tiny_image(tmp_path) -> Path:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    return path


@pytest.fixture()
def short_audio(tmp_path) -> Path:
    path = tmp_path / "click.wav"
    sf.write(path, np.zeros(160, np.float32), 16000)
    return path


def test_media_are_read_once_into_the_request(tmp_path):
    """build_request validates with check_inputs and hands the pipeline bytes, never a path to reopen."""
    request = request_for(tmp_path, "mode=a2v")
    media = tmp_path / "media"
    assert request.image == (media / "face.png").read_bytes() and request.audio == (media / "speech.wav").read_bytes()


def test_fractional_duration_and_an_explicit_prompt_are_kept(tmp_path):
    request = request_for(tmp_path, "duration=0.48", "prompt='A man speaks.'", "seed=7", "resolution=540p_sr")
    assert (request.duration, request.prompt, request.seed) == (0.48, "A man speaks.", 7)
    assert request.resolution == "540p_sr"  # the release's named SR path is a command-line resolution


@pytest.mark.parametrize(
    "override, field, message",
    [
        ("duration=0", "duration", "must be > 0 and <= 10 seconds, got 0"),
        ("duration=-1", "duration", "must be > 0 and <= 10 seconds, got -1"),
        ("duration=1000", "duration", "must be > 0 and <= 10 seconds, got 1000"),
        ("duration=0.5", "duration", "whole number of frames"),
        ("prompt=''", "prompt", "must not be empty, got ''"),
        ("seed=-5", "seed", "must be between 0 and 2**32 - 1, got -5"),
        ("sampler=unipc_cfg", "sampler.guidance_scale", "must be finite, got nan"),
        ("sampler.num_steps=1000", "sampler.num_steps", "must be between 1 and 100, got 1000"),
        ("mode=ti2v", "image", "file not found: /no/such/face.png"),
    ],
)
def test_bad_settings_are_named(tmp_path, override, field, message):
    extra = {"sampler=unipc_cfg": ["sampler.guidance_scale=nan"], "mode=ti2v": ["mode.image=/no/such/face.png"]}
    found = problems(tmp_path, override, *extra.get(override, []))
    assert list(found) == [field] and message in found[field], found


def test_media_are_checked(tmp_path, tiny_image, short_audio):
    found = problems(tmp_path, "mode=a2v", f"mode.image={tiny_image}", f"mode.audio={short_audio}")
    assert "is 1x1 pixels; expected at least 64" in found["image"]
    assert "is 0.010 s long; expected at least 0.04 s" in found["audio"]


def test_unwritable_output(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write in" in problems(tmp_path, output=blocked / "clip.mp4")["output"]
    assert "is a directory" in problems(tmp_path, output=tmp_path)["output"]


def test_the_command_line_fails_before_loading_a_model(tmp_path):
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "magihuman.cli.generate", f"hydra.run.dir={tmp_path}", f"model.cache_dir={cache}",
         "duration=0", "seed=-5", "prompt=''"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    for fragment in ("duration: must be > 0", "seed: must be between 0", "prompt: must not be empty"):
        assert fragment in done.stderr
    assert not cache.exists()  # the tiny release was never built nor loaded
