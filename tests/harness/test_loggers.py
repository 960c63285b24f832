"""The wandb logger writes an offline run with config, timings, metrics and the clip."""

from __future__ import annotations

import numpy as np
import pytest

from magihuman.harness.loggers import WandbLogger
from magihuman.harness.store import RunRecord
from magihuman.media import write_mp4

wandb = pytest.importorskip("wandb")


def test_offline_run_holds_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    video = write_mp4(tmp_path / "clip.mp4", np.zeros((5, 32, 32, 3), np.uint8), np.zeros((2, 8820), np.float32))
    record = RunRecord(
        run_id="abc123", status="ok", started_at="t0", finished_at="t1",
        params={"sampler": "dmd", "sampler.num_steps": 2, "sampler.guidance_scale": None, "resolution": "256p",
                "mode": "t2v", "duration": 1.0, "quant": "none", "prompt_id": "greeting", "seed": 0},
        timings={"base_denoise": 1.5, "total": 3.0}, metrics={"flicker": 0.25}, flops=1e9,
    )  # fmt: skip
    WandbLogger(project="test", mode="offline", dir=str(tmp_path / "wandb")).log(record, video)
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].rglob("*.wandb")) and any(runs[0].rglob("*.mp4"))


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="wandb mode must be offline, online or disabled"):
        WandbLogger(mode="sometimes")
