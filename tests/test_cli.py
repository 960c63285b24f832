"""The console entry points: a timed forward and one generated clip with its JSON response."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_module

from magihuman.cli.forward import UsageError, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def forward_configs():
    with initialize_config_module("magihuman.configs", version_base="1.3"):
        yield


@pytest.mark.parametrize("stage, resolution, latent", [("base", "256p", (16, 28)), ("sr", "540p_sr", (32, 56))])
def test_forward_times_the_stages_dit_on_the_clip(forward_configs, tmp_path_factory, stage, resolution, latent):
    """A 0.2 s clip (2 latent frames, 6 audio latents) packed at the stage's size through the pipeline's
    velocity: the base DiT at 448x256, the SR DiT at 896x512 (the prompt's text tokens on top)."""
    cache = tmp_path_factory.getbasetemp() / "tiny"  # the tiny release, written once for both
    cfg = compose("forward", [f"model.cache_dir={cache}", "duration=0.2", f"resolution={resolution}",
                              f"stage={stage}", "repeats=2"])  # fmt: skip
    report = run(cfg)
    assert report["dit"] == ("distill" if stage == "base" else "540p_sr") and report["rows"] == 1
    assert report["finite"] and report["velocity_video_shape"] == [48, 2, *latent]
    video_tokens = 2 * (latent[0] // 2) * (latent[1] // 2)  # 2x2 patches
    assert report["tokens"] - video_tokens - 6 > 0  # + the encoded prompt
    assert len(report["forward_s"]) == 2 and report["forward_s_median"] > 0 and report["flops"] > 0


def test_forward_refuses_an_sr_stage_without_one(forward_configs):
    with pytest.raises(UsageError, match="resolution 256p has no SR stage"):
        run(compose("forward", ["stage=sr"]))


def test_generate_prints_the_api_response(tmp_path):
    """An A2V clip whose speech (0.4 s) is shorter than the asked second: the API's response, duration note included."""
    speech = tmp_path / "speech.wav"
    sf.write(speech, 0.1 * np.sin(np.linspace(0, 800, 6400)).astype(np.float32), 16000)
    done = subprocess.run(
        [sys.executable, "-m", "magihuman.cli.generate", f"hydra.run.dir={tmp_path}", f"model.cache_dir={tmp_path / 'c'}",
         "sampler.num_steps=1", "sampler.progress=false", "seed=3", "duration=1", "mode=a2v", f"mode.audio={speech}",
         f"prompts.media_dir={tmp_path / 'media'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    response = json.loads(done.stdout[done.stdout.index("{") :])
    assert set(response) == {"video", "seed", "duration", "duration_note", "safety_note"}
    assert response["seed"] == 3 and response["video"]["file_name"] == "clip.mp4"
    assert (tmp_path / "clip.mp4").stat().st_size == response["video"]["file_size"]
    assert 0.3 <= response["duration"] <= 0.4  # the speech sets the clip's length
    assert "shorter than the requested 1 s" in response["duration_note"]
