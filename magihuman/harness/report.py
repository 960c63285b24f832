"""``magihuman-report RESULTS [--baseline OTHER] [--out DIR]``: a sweep's results as Markdown + HTML.

Reads a ``ResultsStore`` (SQLite) and writes ``report.md``, an ``index.html`` rendering
of the same blocks, and PNG plots:

- per-stage time, stacked, by resolution and by resolution/sampler/steps;
- quality / lip-sync vs latency per metric, one point per setting (mean over prompts
  and seeds), with the Pareto front marked;
- regressions against a baseline store, matched by params (run_ids differ when the
  environment does), sorted by severity;
- failed runs with their errors.

The functions are public so that ``notebooks/compare_settings.ipynb`` draws the same
plots. Figures are built on the Agg canvas directly (no pyplot state), and every file
is written atomically (temp file + rename) so a reader never sees half a report.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from magihuman.harness.store import RESOLUTIONS, STAGES, ResultsStore, RunRecord

GIB = 2**30
SETTING_KEYS: tuple[str, ...] = ("resolution", "mode", "sampler", "num_steps", "guidance_scale")
T = TypeVar("T")


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricSpec:
    """Which way a metric is better, and how to turn a change into a relative one."""

    higher_is_better: bool
    floor: float = 1e-6  # smallest baseline magnitude used as denominator of a relative change
    magnitude: bool = False  # compare |x|: a signed offset whose best value is 0

    def score(self, x: float) -> float:
        return abs(x) if self.magnitude else x

    def worsening(self, baseline: float, current: float) -> float:
        """Change in the bad direction, relative to the baseline (negative = improved)."""
        b, c = self.score(baseline), self.score(current)
        delta = (b - c) if self.higher_is_better else (c - b)
        return delta / max(abs(b), self.floor)


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(higher_is_better=True, floor=1.0),
    "ssim": MetricSpec(higher_is_better=True, floor=0.01),
    "lpips": MetricSpec(higher_is_better=False, floor=0.01),
    "av_offset_frames": MetricSpec(higher_is_better=False, floor=1.0, magnitude=True),
    "av_confidence": MetricSpec(higher_is_better=True, floor=0.1),
    "temporal_warp_error": MetricSpec(higher_is_better=False, floor=1e-3),
    "flicker": MetricSpec(higher_is_better=False, floor=1e-3),
    "lse_d": MetricSpec(higher_is_better=False, floor=0.1),
    "lse_c": MetricSpec(higher_is_better=True, floor=0.1),
    "syncnet_offset_frames": MetricSpec(higher_is_better=False, floor=1.0, magnitude=True),
    "audio_duration_diff_s": MetricSpec(higher_is_better=False, floor=0.04, magnitude=True),
    "audio_clipping_ratio": MetricSpec(higher_is_better=False, floor=1e-3),
    "audio_silence_ratio": MetricSpec(higher_is_better=False, floor=1e-2),
}


def metric_label(name: str) -> str:
    spec = METRICS.get(name)
    if spec is None:
        return f"{name} (direction unknown: taken as higher is better)"
    shown = f"|{name}|" if spec.magnitude else name
    return f"{shown} ({'higher' if spec.higher_is_better else 'lower'} is better)"


# ---------------------------------------------------------------- grouping


def load_records(path: str | Path) -> list[RunRecord]:
    """All records of an existing results store (FileNotFoundError if there is none)."""
    return ResultsStore(path, create=False).rows()


def _order(key: str, value: Any) -> tuple:
    """Sort key: resolutions in size order, None last, numbers before strings."""
    if value is None:
        return (3, "")
    if key == "resolution" and value in RESOLUTIONS:
        return (0, RESOLUTIONS.index(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _group(items: Iterable[T], by: Sequence[str], values: Callable[[T], dict[str, Any]]) -> dict[tuple, list[T]]:
    groups: dict[tuple, list[T]] = {}
    for item in items:
        groups.setdefault(tuple(values(item).get(k) for k in by), []).append(item)
    return dict(sorted(groups.items(), key=lambda kv: [_order(k, v) for k, v in zip(by, kv[0])]))


def group_records(records: Iterable[RunRecord], by: Sequence[str]) -> dict[tuple, list[RunRecord]]:
    """Records grouped by the values of params ``by``, groups in display order."""
    return _group(records, by, lambda r: r.params)


def label(by: Sequence[str], values: Sequence[Any]) -> str:
    """``540p/unipc_cfg/32`` style label of a group (guidance gets a ``g`` prefix)."""
    parts = [f"g{v}" if k == "guidance_scale" else f"{v}" for k, v in zip(by, values)]
    return "/".join(parts)


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


# ---------------------------------------------------------------- stage times


@dataclass(frozen=True)
class StageRow:
    """Mean per-stage seconds of one group of ok runs; ``other`` = total minus the stages."""

    group: tuple
    n: int
    stages: dict[str, float]
    other: float
    total: float


def stages_present(records: Iterable[RunRecord]) -> list[str]:
    """Known stages in pipeline order, then any extra stage names the runs reported."""
    seen = {k for r in records for k in r.timings if k != "total"}
    return [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))


def stage_table(records: Sequence[RunRecord], by: Sequence[str]) -> list[StageRow]:
    ok = [r for r in records if r.status == "ok" and r.total_time is not None]
    names = stages_present(ok)
    rows = []
    for group, rs in group_records(ok, by).items():
        stages = {s: statistics.fmean(r.timings.get(s, 0.0) for r in rs) for s in names}
        total = statistics.fmean(r.total_time for r in rs)
        rows.append(StageRow(group, len(rs), stages, max(total - sum(stages.values()), 0.0), total))
    return rows


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_stage_times(records: Sequence[RunRecord], by: Sequence[str] = ("resolution",)) -> Figure | None:
    """Stacked bars of mean seconds per stage, one bar per group of ``by``; None without ok runs."""
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
    ax.set_ylabel("seconds (mean over runs)")
    ax.set_title(f"time per stage by {' / '.join(by)}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _colors(n: int) -> list:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---------------------------------------------------------------- pareto


@dataclass(frozen=True)
class SettingPoint:
    """One setting (``SETTING_KEYS``) averaged over prompts and seeds."""

    setting: dict[str, Any]
    total_s: float
    value: float  # mean metric score (|x| for magnitude metrics)
    n: int
    on_front: bool = False


def setting_points(records: Sequence[RunRecord], metric: str) -> list[SettingPoint]:
    """Mean total time and metric per setting, over ok runs that have both."""
    spec = METRICS.get(metric, MetricSpec(higher_is_better=True))
    usable = [
        r for r in records if r.status == "ok" and r.total_time is not None and r.metrics.get(metric) is not None
    ]
    points = []
    for group, rs in group_records(usable, SETTING_KEYS).items():
        total = statistics.fmean(r.total_time for r in rs)
        value = statistics.fmean(spec.score(r.metrics[metric]) for r in rs)
        points.append(SettingPoint(dict(zip(SETTING_KEYS, group)), total, value, len(rs)))
    return points


def pareto_front(points: Sequence[SettingPoint], higher_is_better: bool = True) -> list[SettingPoint]:
    """``points`` with ``on_front`` set: no other point is at least as fast and as good, and better in one."""
    sign = 1.0 if higher_is_better else -1.0

    def dominates(a: SettingPoint, b: SettingPoint) -> bool:
        ga, gb = sign * a.value, sign * b.value
        return a.total_s <= b.total_s and ga >= gb and (a.total_s < b.total_s or ga > gb)

    return [
        SettingPoint(p.setting, p.total_s, p.value, p.n, not any(dominates(q, p) for q in points)) for p in points
    ]


def metric_points(records: Sequence[RunRecord], metric: str) -> list[SettingPoint]:
    """``setting_points`` with the Pareto front marked (unknown metrics: higher is better)."""
    spec = METRICS.get(metric, MetricSpec(higher_is_better=True))
    return pareto_front(setting_points(records, metric), spec.higher_is_better)


def metrics_present(records: Iterable[RunRecord]) -> list[str]:
    """Metric names of ok runs: known ones in ``METRICS`` order, then the others sorted."""
    seen = {k for r in records if r.status == "ok" for k in r.metrics}
    return [m for m in METRICS if m in seen] + sorted(seen - set(METRICS))


def missing_reasons(records: Iterable[RunRecord], metric: str) -> list[str]:
    """Distinct ``metric_notes`` given for runs where ``metric`` is None."""
    reasons = {r.metric_notes.get(metric, "no reason recorded") for r in records if r.metrics.get(metric) is None}
    return sorted(reasons)


def plot_pareto(records: Sequence[RunRecord], metric: str) -> Figure | None:
    """Metric vs mean total time per setting, front joined by a dashed line; None without data."""
    points = metric_points(records, metric)
    if not points:
        return None
    fig = _new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    series = _group(points, ("sampler", "resolution"), lambda p: p.setting)
    for (sampler, resolution), ps in zip(series, series.values()):
        marker = "os^D"[RESOLUTIONS.index(resolution)] if resolution in RESOLUTIONS else "x"
        ax.scatter([p.total_s for p in ps], [p.value for p in ps], marker=marker, s=40, label=f"{sampler} {resolution}")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.total_s)
    xs, ys = [p.total_s for p in front], [p.value for p in front]
    ax.plot(xs, ys, "k--", lw=1, marker="o", ms=11, mfc="none", label="Pareto front")
    keys = ("resolution", "sampler", "num_steps", "guidance_scale")
    for p in front:
        text = label(keys, [p.setting[k] for k in keys])
        ax.annotate(text, (p.total_s, p.value), fontsize="x-small", xytext=(6, -10), textcoords="offset points")
    ax.set_xlabel("total seconds per video (mean over prompts/seeds)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{metric} vs latency")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# ---------------------------------------------------------------- regressions


@dataclass(frozen=True)
class Regression:
    """One sweep point that got worse than in the baseline; ``severity`` = fractional worsening."""

    params: dict[str, Any]
    kind: Literal["time", "metric", "failure"]
    name: str  # "total", a metric name, or "status"
    baseline: float | None
    current: float | None
    severity: float  # time: ratio - 1; metric: relative worsening; failure: inf
    detail: str = ""


@dataclass
class Comparison:
    """Result of ``compare``: regressions (most severe first) and what could not be compared."""

    regressions: list[Regression]
    matched: int
    only_current: int
    only_baseline: int
    time_threshold: float
    metric_threshold: float
    notes: list[str] = field(default_factory=list)


def point_key(params: dict[str, Any]) -> str:
    """Identity of a sweep point across environments: its params as canonical JSON."""
    return json.dumps(params, sort_keys=True, default=str)


def latest_by_point(records: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """One record per point: the latest ok one, else the latest failure."""
    best: dict[str, RunRecord] = {}
    for r in records:
        k = point_key(r.params)
        best[k] = max(best.get(k, r), r, key=lambda x: (x.status == "ok", x.finished_at))
    return best


def first_line(text: str | None, limit: int = 300) -> str:
    """First line of an error (its ``Type: message``), cut to ``limit`` characters."""
    return text.splitlines()[0][:limit] if text else ""


def _worst_stage(base: RunRecord, cur: RunRecord) -> str:
    ratios = {
        s: cur.timings[s] / base.timings[s]
        for s in base.timings
        if s != "total" and s in cur.timings and base.timings[s] > 0
    }
    if not ratios:
        return ""
    s = max(ratios, key=ratios.get)
    return f"worst stage {s} x{ratios[s]:.2f}"


def compare(
    current: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    time_threshold: float = 1.10,
    metric_threshold: float = 0.05,
) -> Comparison:
    """Points slower than ``time_threshold`` x baseline total, metrics worse by more than
    ``metric_threshold`` (relative), or failing where the baseline was ok."""
    cur, base = latest_by_point(current), latest_by_point(baseline)
    shared = [k for k in cur if k in base]
    found: list[Regression] = []
    unknown: set[str] = set()
    for k in shared:
        c, b = cur[k], base[k]
        if b.status != "ok":
            continue
        if c.status != "ok":
            found.append(Regression(c.params, "failure", "status", None, None, math.inf, first_line(c.error)))
            continue
        if c.total_time is not None and b.total_time:
            ratio = c.total_time / b.total_time
            if ratio > time_threshold:
                slow = Regression(c.params, "time", "total", b.total_time, c.total_time, ratio - 1, _worst_stage(b, c))
                found.append(slow)
        for name, bv in b.metrics.items():
            cv = c.metrics.get(name)
            if bv is None or cv is None:
                continue
            if name not in METRICS:
                unknown.add(name)
                continue
            worse = METRICS[name].worsening(bv, cv)
            if worse > metric_threshold:
                found.append(Regression(c.params, "metric", name, bv, cv, worse, f"delta {cv - bv:+.4g}"))
    found.sort(key=lambda r: (-r.severity, point_key(r.params), r.name))
    notes = [f"metric {m!r} not compared: direction unknown (add it to report.METRICS)" for m in sorted(unknown)]
    only_cur, only_base = len(cur) - len(shared), len(base) - len(shared)
    return Comparison(found, len(shared), only_cur, only_base, time_threshold, metric_threshold, notes)


# ---------------------------------------------------------------- document blocks


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report directory
    alt: str


Block = Heading | Para | Table | Image


def fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.4g}"
    return str(x)


def _md_cell(x: Any) -> str:
    return fmt(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(map(_md_cell, b.headers)) + " |", "|" + "---|" * len(b.headers)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            out.append("\n".join(lines))
        else:
            out.append(f"![{b.alt}]({b.path})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(fmt(h))}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{e(fmt(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            body.append(f'<p><img src="{e(b.path)}" alt="{e(b.alt)}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------- sections


def _params_label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def summary_section(records: Sequence[RunRecord], source: str) -> list[Block]:
    ok = sum(r.status == "ok" for r in records)
    env_keys = sorted({k for r in records for k in r.env})
    env_rows = [[k, ", ".join(sorted({str(r.env[k]) for r in records if k in r.env}))] for k in env_keys]
    blocks: list[Block] = [
        Para(f"Results: {source} — {len(records)} runs, {ok} ok, {len(records) - ok} failed."),
    ]
    if env_rows:
        blocks.append(Table(["env", "values"], env_rows))
    return blocks


def stage_section(records: Sequence[RunRecord], by: Sequence[str], image: str) -> tuple[list[Block], Figure | None]:
    rows = stage_table(records, by)
    if not rows:
        return [Para("No ok runs with timings.")], None
    names = list(rows[0].stages)
    table = Table(
        [" / ".join(by), "n", *names, "other", "total"],
        [[label(by, r.group), r.n, *(r.stages[s] for s in names), r.other, r.total] for r in rows],
    )
    return [table, Image(image, f"time per stage by {' / '.join(by)}")], plot_stage_times(records, by)


def throughput_section(records: Sequence[RunRecord]) -> list[Block]:
    by = ("resolution", "sampler", "num_steps")
    ok = [r for r in records if r.status == "ok"]
    rows = []
    for group, rs in group_records(ok, by).items():
        step = _mean(statistics.fmean(r.step_times) if r.step_times else None for r in rs)
        peak = _mean(r.peak_memory_bytes / GIB if r.peak_memory_bytes else None for r in rs)
        tflops, mfu = _mean(r.tflops_per_s for r in rs), _mean(r.mfu for r in rs)
        rows.append([label(by, group), len(rs), step, peak, tflops, mfu])
    if not rows:
        return []
    return [Table([" / ".join(by), "n", "mean step s", "peak GiB", "TFLOP/s", "MFU"], rows)]


def pareto_section(records: Sequence[RunRecord]) -> tuple[list[Block], dict[str, Figure]]:
    blocks: list[Block] = []
    figures: dict[str, Figure] = {}
    metrics = metrics_present(records)
    if not metrics:
        return [Para("No metrics were recorded.")], figures
    for metric in metrics:
        blocks.append(Heading(3, metric))
        fig = plot_pareto(records, metric)
        if fig is None:
            reasons = "; ".join(missing_reasons(records, metric))
            blocks.append(Para(f"Skipped: no ok run has a value for {metric} ({reasons})."))
            continue
        name = f"pareto_{metric}.png"
        figures[name] = fig
        front = sorted((p for p in metric_points(records, metric) if p.on_front), key=lambda p: p.total_s)
        blocks.append(Image(name, f"{metric} vs latency"))
        blocks.append(Para(f"Pareto front ({metric_label(metric)}):"))
        blocks.append(
            Table(
                [*SETTING_KEYS, "n", "total s", metric],
                [[*(p.setting[k] for k in SETTING_KEYS), p.n, p.total_s, p.value] for p in front],
            )
        )
    return blocks, figures


def regression_section(cmp: Comparison, baseline_source: str) -> list[Block]:
    blocks: list[Block] = [
        Para(
            f"Baseline: {baseline_source}. Matched {cmp.matched} points by params "
            f"({cmp.only_current} only in these results, {cmp.only_baseline} only in the baseline). "
            f"Thresholds: time ratio > {cmp.time_threshold}, metric worse by > {cmp.metric_threshold:.1%}."
        )
    ]
    blocks += [Para(n) for n in cmp.notes]
    if not cmp.regressions:
        return blocks + [Para("No regressions beyond the thresholds.")]
    rows = [[r.kind, r.name, _params_label(r.params), r.baseline, r.current, _severity(r), r.detail] for r in cmp.regressions]
    return blocks + [Table(["kind", "what", "point", "baseline", "current", "worse by", "detail"], rows)]


def _severity(r: Regression) -> str:
    return "newly failing" if math.isinf(r.severity) else f"{r.severity:+.0%}"


def failures_section(records: Sequence[RunRecord]) -> list[Block]:
    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return [Para("No failed runs.")]
    rows = [[r.run_id, _params_label(r.params), first_line(r.error), r.finished_at] for r in failed]
    return [Table(["run_id", "point", "error", "finished"], rows)]


# ---------------------------------------------------------------- writing


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to a temp file beside ``path``, then rename over it."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    for by, name in ((("resolution",), "by_resolution"), (("resolution", "sampler", "num_steps"), "by_setting")):
        section, figures[f"stage_time_{name}.png"] = stage_section(records, by, f"stage_time_{name}.png")
        blocks += section
    blocks += throughput_section(records)

    blocks.append(Heading(2, "Quality vs latency"))
    section, pareto_figs = pareto_section(records)
    blocks += section
    figures.update(pareto_figs)

    comparison = None
    if baseline is not None:
        blocks.append(Heading(2, "Regressions against baseline"))
        comparison = compare(records, baseline, time_threshold, metric_threshold)
        blocks += regression_section(comparison, baseline_source)

    blocks.append(Heading(2, "Failed runs"))
    blocks += failures_section(records)

    images = [write_atomic(out / name, figure_png(fig)) for name, fig in figures.items() if fig is not None]
    md = write_atomic(out / "report.md", to_markdown(blocks))
    page = write_atomic(out / "index.html", to_html(blocks, title))
    return ReportFiles(md, page, images, comparison)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="magihuman-report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results store (SQLite) of the sweep")
    parser.add_argument("--baseline", type=Path, help="another results store to check for regressions against")
    parser.add_argument("--out", type=Path, help="output directory (default: RESULTS's directory/report)")
    parser.add_argument("--time-threshold", type=float, default=1.10, help="flag total time ratios above this")
    parser.add_argument("--metric-threshold", type=float, default=0.05, help="flag metrics worse by more than this fraction")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.results)
        baseline = load_records(args.baseline) if args.baseline else None
    except FileNotFoundError as e:
        parser.error(str(e))
    files = write_report(
        records,
        args.out or args.results.parent / "report",
        source=str(args.results),
        baseline=baseline,
        baseline_source=str(args.baseline),
        time_threshold=args.time_threshold,
        metric_threshold=args.metric_threshold,
    )
    print(files.markdown)
    if files.comparison is not None:
        print(f"{len(files.comparison.regressions)} regressions against {args.baseline}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
