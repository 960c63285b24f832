"""``score`` and the ``magihuman-eval`` CLI: JSON output and clear errors on bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from magihuman.eval import EvalInputError, score
from magihuman.eval.cli import main


def test_cli_prints_strict_json(talking_mp4, capsys):
    assert main([talking_mp4, "--reference", talking_mp4, "--metrics", "av_sync,psnr,ssim,syncnet,audio,flicker"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    m = out["metrics"]
    assert m["av_sync"]["available"] and m["av_sync"]["offset_frames"] == 0
    assert m["psnr"]["mean"] == "inf"
    assert m["ssim"]["mean"] == pytest.approx(1.0)
    assert m["syncnet"] == {"available": False, "reason": m["syncnet"]["reason"], "elapsed_s": m["syncnet"]["elapsed_s"],
                            "face_detector": "mtcnn"}  # fmt: skip
    assert m["audio"]["duration_matches"] is True
    assert out["video"]["num_frames"] == 75 and out["video"]["fps"] == 25.0


def test_default_metrics_follow_inputs(talking_clip):
    out = score(talking_clip.video.frames, audio=(talking_clip.audio.mono, 16000), fps=25)
    assert set(out["metrics"]) == {"av_sync", "syncnet", "audio", "temporal_consistency", "flicker"}
    silent = score(talking_clip.video.frames[:4], fps=25)
    assert set(silent["metrics"]) == {"temporal_consistency", "flicker"} and silent["audio"] is None


def test_cli_bad_inputs_exit_2(tmp_path, talking_mp4, capsys):
    assert main([str(tmp_path / "missing.mp4")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    assert main([str(junk)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([talking_mp4, "--metrics", "fvd"]) == 2
    assert "unknown metric(s) ['fvd']" in capsys.readouterr().err


def test_unknown_metric_lists_valid_names(talking_clip):
    with pytest.raises(EvalInputError, match="expected any of .*'av_sync'"):
        score(talking_clip.video, metrics=["lse"])


def test_mismatched_reference_frames(talking_clip):
    v = talking_clip.video
    with pytest.raises(EvalInputError, match="75 frames but the reference has 70"):
        score(v, reference=v.frames[:70], metrics=["psnr"])


def test_missing_inputs_are_named(talking_clip):
    with pytest.raises(EvalInputError, match="needs fps="):
        score(talking_clip.video.frames)
    with pytest.raises(EvalInputError, match="'ssim' compares against a reference"):
        score(talking_clip.video, metrics=["ssim"])
    with pytest.raises(EvalInputError, match="'av_sync' needs audio"):
        score(talking_clip.video, metrics=["av_sync"])
    with pytest.raises(EvalInputError, match=r"uint8 array \[T, H, W, 3\]"):
        score(np.zeros((3, 8, 8), np.float32), fps=25)
