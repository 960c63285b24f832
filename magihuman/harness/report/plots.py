"""How a report draws: stage-time bars and quality-vs-latency scatter plots.

Figures are built on the Agg canvas directly (no pyplot state), so they can be drawn
from any thread and saved by the caller.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image as PILImage

from magihuman.harness.report.analysis import (
    group_by,
    label,
    metric_label,
    metric_points,
    setting_keys,
    stage_table,
)
from magihuman.harness.store import RunRecord


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_stage_times(records: Sequence[RunRecord], by: Sequence[str] | None = None) -> Figure | None:
    """Stacked bars of mean seconds per stage, one bar per group of ``by`` (default: every
    setting that varies); None without ok runs."""
    by = setting_keys(records) if by is None else by
    rows = stage_table(records, by)
    if not rows:
        return None
    names = list(rows[0].stages) + ["other"]
    fig = _new_figure(max(6.0, 0.6 * len(rows) + 3.0), 4.5)
    ax = fig.add_subplot()
    x = range(len(rows))
    bottom = [0.0] * len(rows)
    colors = _colors(len(names))
    for name, color in zip(names, colors):
        heights = [r.other if name == "other" else r.stages[name] for r in rows]
        ax.bar(x, heights, bottom=bottom, label=name, color=color)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ticks = [label(by, r.group) for r in rows]
    crowded = len(rows) > 4 or sum(len(t) for t in ticks) > 48  # labels would touch
    ax.set_xticks(list(x), ticks, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("time (s, mean over runs)")
    ax.set_title("time per stage by setting")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _colors(n: int) -> list:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_pareto(records: Sequence[RunRecord], metric: str) -> Figure | None:
    """Metric vs mean total time per setting, front joined by a dashed line; None without data."""
    points = metric_points(records, metric)
    if not points:
        return None
    fig = _new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    keys = list(points[0].setting)
    series = group_by(points, keys[:1], lambda p: p.setting)  # one marker per value of the first setting
    for i, ((first,), ps) in enumerate(series.items()):
        name = label(keys[:1], [first])
        ax.scatter([p.total_s for p in ps], [p.value for p in ps], marker="os^Dvx*P"[i % 8], s=40, label=name)
    front = sorted((p for p in points if p.on_front), key=lambda p: p.total_s)
    xs, ys = [p.total_s for p in front], [p.value for p in front]
    ax.plot(xs, ys, "k--", lw=1, marker="o", ms=11, mfc="none", label="Pareto front")
    for p in front:
        text = label(keys, [p.setting[k] for k in keys])
        ax.annotate(text, (p.total_s, p.value), fontsize="x-small", xytext=(6, -10), textcoords="offset points")
    ax.set_xlabel("total time per clip (s, mean over prompts x seeds)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{metric} vs latency")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def frame_strip(frames: np.ndarray, count: int = 6, height: int = 96) -> bytes:
    """PNG of ``count`` evenly spaced frames of ``[F, H, W, 3]`` uint8, side by side at ``height`` px."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    tiles = [PILImage.fromarray(frames[i]).resize((width, height), PILImage.Resampling.BILINEAR) for i in picks]
    strip = PILImage.new("RGB", (width * len(tiles), height))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * width, 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()

