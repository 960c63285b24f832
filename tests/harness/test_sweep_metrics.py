"""Sweep metrics are scored on the generated frames and waveform; wer / clip are recorded
when their models are given (here stand-ins for the ASR and CLIP models)."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from magihuman.eval import api
from magihuman.eval.asr import WERResult, WordErrors
from magihuman.eval.clip_align import ClipAlignment
from magihuman.harness.sweep import Clip, clip_metrics


def _clip(seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (25, 32, 48, 3), dtype=np.uint8)
    return Clip(frames, (0.1 * rng.standard_normal((2, 44_100))).astype(np.float32), 44_100)


def test_wer_and_clip_are_recorded_when_their_models_are_given(monkeypatch, tmp_path):
    seen = {}

    def fake_wer(x):
        seen["wer"] = (x.config.whisper_dir, x.config.transcript, x.audio.sample_rate, x.audio.channels)
        return WERResult(0.25, "hello and welcome", "hello and welcome to the show", WordErrors(0.25, 0, 1, 0, 4))

    def fake_clip(x):
        seen["clip"] = (x.config.clip_dir, x.config.prompt, x.video.frames.shape)
        return ClipAlignment(31.5, 0.315, 8, x.config.prompt)

    monkeypatch.setitem(api.METRICS, "wer", fake_wer)
    monkeypatch.setitem(api.METRICS, "clip", fake_clip)
    cfg = OmegaConf.create({"whisper_dir": str(tmp_path / "asr"), "clip_dir": str(tmp_path / "clip")})
    values, notes = clip_metrics(_clip(), ["wer", "clip"], cfg, prompt="a prompt", transcript="hello and welcome to the show")
    assert values == {"wer": 0.25, "clip_score": 31.5} and notes == {}
    assert seen["wer"] == (str(tmp_path / "asr"), "hello and welcome to the show", 44_100, 2)
    assert seen["clip"] == (str(tmp_path / "clip"), "a prompt", (25, 32, 48, 3))  # the generated frames, as is


def test_without_models_the_reason_is_recorded():
    cfg = OmegaConf.create({"whisper_dir": None, "clip_dir": None})
    values, notes = clip_metrics(_clip(), ["wer", "clip", "flicker"], cfg, prompt="a prompt", transcript="hello")
    assert values["wer"] is None and "no ASR model given" in notes["wer"]
    assert values["clip_score"] is None and "no CLIP model given" in notes["clip_score"]
    assert values["flicker"] is not None


def test_reference_metrics_compare_the_generated_frames(tmp_path):
    a, b = _clip(0), _clip(1)
    loaded = Clip.load(a.save(tmp_path / "a.npz"))
    assert np.array_equal(loaded.frames, a.frames) and loaded.sample_rate == 44_100
    values, _ = clip_metrics(b, ["psnr"], OmegaConf.create({}), reference=loaded)
    assert 0 < values["psnr"] < 20  # two random clips: low, and finite (no x264 in between)
    same, notes = clip_metrics(a, ["psnr"], OmegaConf.create({}), reference=loaded)
    assert same["psnr"] == float("inf")  # identical frames: lossless all the way
