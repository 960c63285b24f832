"""The console entry points: a timed forward and one generated clip with its JSON response."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from magihuman.cli.forward import run

REPO = Path(__file__).resolve().parents[1]


def test_forward_reports_a_finite_timed_forward(tmp_path):
    report = run(["--cache", str(tmp_path), "--latent-frames", "3", "--latent-size", "4", "6", "--repeats", "1"])
    assert report["finite"] and report["tokens"] == 3 * 2 * 3 + 9 + 64
    assert report["velocity_video_shape"] == [48, 3, 4, 6] and report["forward_s_median"] > 0


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
