"""Sweep metrics are scored on the generated frames and waveform; wer / clip are recorded
when their models are given (here stand-ins for the ASR and CLIP models)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
from omegaconf import OmegaConf

from magihuman.eval.asr import WERResult, WordErrors
from magihuman.eval.clip_align import ClipAlignment
from magihuman.eval.metrics import METRICS
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

    monkeypatch.setitem(METRICS, "wer", dataclasses.replace(METRICS["wer"], compute=fake_wer))
    monkeypatch.setitem(METRICS, "clip", dataclasses.replace(METRICS["clip"], compute=fake_clip))
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


def test_a_declared_metric_reaches_the_sweep_records_and_the_report(monkeypatch):
    """One declaration: a new metric in ``eval.metrics.METRICS`` is scored, flattened into the
    store's names and given its direction in the report, with no change to sweep or report."""
    from magihuman.eval.metrics import Metric, MetricSpec, Output
    from magihuman.harness.report import metric_label, metric_spec, metrics_present

    def sharpness(x):
        return {"laplacian_var": float(x.video.frames.std()), "unused": 1.0}

    declared = Metric(sharpness, (Output("sharpness", "laplacian_var", MetricSpec(False, 0.5)),))
    monkeypatch.setitem(METRICS, "sharpness", declared)
    values, notes = clip_metrics(_clip(), ["flicker", "sharpness"], OmegaConf.create({}))
    assert values["sharpness"] == float(_clip().frames.std()) and values["flicker"] is not None and notes == {}
    assert metric_spec("sharpness") == MetricSpec(False, 0.5)
    assert metric_label("sharpness") == "sharpness (lower is better)"
    record = SimpleNamespace(status="ok", metrics={"sharpness": 1.0, "zzz": 2.0, "flicker": 0.1})  # what it reads
    assert metrics_present([record]) == ["flicker", "sharpness", "zzz"]  # declared order, then unknown


def test_an_input_error_of_one_metric_loses_no_other():
    """25 frames are too few for av_sync's ±15-frame search: it is recorded as None with the
    reason, and the metrics scored in the same call keep their numbers."""
    values, notes = clip_metrics(_clip(), ["av_sync", "flicker", "audio"], OmegaConf.create({}))
    assert values["av_offset_frames"] is None and values["av_confidence"] is None
    assert "av_sync needs at least 40 frames" in notes["av_offset_frames"]
    assert values["flicker"] is not None and values["audio_silence_ratio"] is not None


def test_the_face_track_is_computed_once_per_clip(monkeypatch, tmp_path):
    """av_sync and syncnet share one face track: the detector the metrics config names runs
    once over the clip."""
    import torch

    from magihuman.eval import face
    from magihuman.eval.synthetic import talking_face_clip
    from magihuman.eval.syncnet import SyncNet

    torch.manual_seed(0)
    weights = tmp_path / "syncnet_v2.model"
    torch.save({k: v for k, v in SyncNet().state_dict().items() if "num_batches_tracked" not in k}, weights)
    real, calls = face.face_detector, []

    def counting(name="mtcnn", s3fd_weights=None, device="cpu"):
        detector = real(name, s3fd_weights, device)
        return lambda frames: calls.append((name, len(frames))) or detector(frames)

    monkeypatch.setattr(face, "face_detector", counting)
    c = talking_face_clip(num_frames=40, height=128, width=160)
    clip = Clip(c.video.frames, c.audio.mono[None], c.audio.sample_rate)
    cfg = OmegaConf.create({"syncnet_weights": str(weights), "face_detector": "haar", "names": ["av_sync"]})
    values, notes = clip_metrics(clip, ["av_sync", "syncnet"], cfg)
    assert calls == [("haar", 40)]  # one detection pass over the 40 frames, for both metrics
    assert values["av_offset_frames"] == 0 and values["lse_d"] is not None and notes == {}
