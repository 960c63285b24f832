"""Reading a results store and writing a report's files (atomically)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from magihuman.harness.report.analysis import Comparison, compare
from magihuman.harness.report.plots import frame_strip
from magihuman.harness.report.render import (
    Block,
    Heading,
    Para,
    clips_section,
    failures_section,
    pareto_section,
    quality_section,
    regression_section,
    stage_section,
    summary_section,
    throughput_section,
    to_html,
    to_markdown,
)
from magihuman.harness.store import ResultsStore, RunRecord, write_atomic


def load_records(path: str | Path) -> list[RunRecord]:
    """All records of an existing results store, opened read-only (nothing in the file changes).

    FileNotFoundError if there is none; ``StoreError`` naming the file if it is not a
    magihuman results store or is corrupt.
    """
    return ResultsStore(path, read_only=True).rows()




def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    images: list[Path]
    comparison: Comparison | None


def _clip_media(run: RunRecord, out: Path) -> tuple[str, str] | None:
    """(mp4, frame strip) of ``run`` relative to the report directory ``out``; the strip is
    drawn from the generated frames (``artifacts["clip"]``). None if either file is gone."""
    video, clip = (Path(run.artifacts[k]) if k in run.artifacts else None for k in ("video", "clip"))
    if video is None or clip is None or not video.exists() or not clip.exists():
        return None
    (out / "clips").mkdir(exist_ok=True)
    with np.load(clip) as z:
        strip = write_atomic(out / "clips" / f"{run.run_id}.png", frame_strip(z["frames"]))
    return os.path.relpath(video, out), os.path.relpath(strip, out)


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | Path,
    source: str = "results",
    baseline: Sequence[RunRecord] | None = None,
    baseline_source: str = "baseline",
    time_threshold: float = 1.10,
    metric_threshold: float = 0.05,
) -> ReportFiles:
    """Write ``report.md``, ``index.html`` and the PNGs into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure | None] = {}
    title = "magihuman sweep report"
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    blocks: list[Block] = [Heading(1, title), Para(f"Generated {generated}.")]
    blocks += summary_section(records, source)

    blocks.append(Heading(2, "Time per stage"))
    section, figures["stage_time.png"] = stage_section(records, "stage_time.png")
    blocks += section
    blocks += throughput_section(records)

    blocks.append(Heading(2, "Quality"))
    blocks += quality_section(records)

    blocks.append(Heading(2, "Quality vs latency"))
    section, pareto_figs = pareto_section(records)
    blocks += section
    figures.update(pareto_figs)

    comparison = None
    if baseline is not None:
        blocks.append(Heading(2, "Regressions against baseline"))
        comparison = compare(records, baseline, time_threshold, metric_threshold)
        blocks += regression_section(comparison, baseline_source)

    blocks.append(Heading(2, "Clips"))
    blocks.append(Para("Each setting's clip beside its numbers (the mp4 is what users keep; a strip of its "
                       "frames is shown for print)."))  # fmt: skip
    blocks += clips_section(records, lambda r: _clip_media(r, out))

    blocks.append(Heading(2, "Failed runs"))
    blocks += failures_section(records)

    images = [write_atomic(out / name, figure_png(fig)) for name, fig in figures.items() if fig is not None]
    md = write_atomic(out / "report.md", to_markdown(blocks))
    page = write_atomic(out / "index.html", to_html(blocks, title))
    return ReportFiles(md, page, images, comparison)


