"""Experiment loggers for sweep points: none, or Weights & Biases (offline by default)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .store import RunRecord


class NullLogger:
    """Logs nothing; the results store is the record."""

    def log(self, record: RunRecord, video: Path | None) -> None:
        pass


class WandbLogger:
    """One wandb run per sweep point: resolved config, params, timings, metrics and the clip.

    ``mode="offline"`` (default) writes runs under ``dir`` for a later ``wandb sync``;
    ``mode="online"`` streams them (needs a login and network).
    """

    def __init__(self, project: str = "magihuman", mode: str = "offline", dir: str = "outputs/wandb"):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("logger=wandb needs the wandb package: pip install 'magihuman[sweep]'") from e
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb mode must be offline, online or disabled; got {mode!r}")
        self.wandb, self.project, self.mode, self.dir = wandb, project, mode, Path(dir)

    def log(self, record: RunRecord, video: Path | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        run = self.wandb.init(
            project=self.project, mode=self.mode, dir=str(self.dir), name=record.run_id,
            config={"params": record.params, "config": record.config, "env": record.env}, reinit="finish_previous",
        )  # fmt: skip
        summary = {f"time/{k}": v for k, v in record.timings.items()}
        summary.update({f"metric/{k}": v for k, v in record.metrics.items() if v is not None})
        summary.update(status=record.status, flops=record.flops, tflops_per_s=record.tflops_per_s, mfu=record.mfu,
                       peak_memory_bytes=record.peak_memory_bytes)  # fmt: skip
        if video is not None and video.exists():
            summary["video"] = self.wandb.Video(str(video), format="mp4")
        run.log(summary)
        run.summary.update({k: v for k, v in asdict(record).items() if k in ("status", "error")})
        run.finish()
