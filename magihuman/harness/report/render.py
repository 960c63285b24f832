"""How a report is written: document blocks, the sections built from comparisons, and
their Markdown and HTML renderings."""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from magihuman.harness.machine import Fingerprint
from magihuman.harness.report.analysis import (
    GIB,
    Comparison,
    Regression,
    first_line,
    group_records,
    label,
    mean_or_none,
    metric_label,
    metric_points,
    metric_spec,
    metrics_present,
    missing_reasons,
    setting_diff,
    setting_keys,
    short_names,
    stage_table,
)
from magihuman.harness.report.plots import plot_pareto, plot_stage_times
from magihuman.harness.store import RunRecord

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


@dataclass(frozen=True)
class Clip:
    """One point's clip beside its numbers: the mp4 to play and a strip of frames (for print)."""

    caption: str
    video: str  # relative to the report directory
    strip: str
    numbers: str


Block = Heading | Para | Table | Image | Clip


def fmt(x: Any) -> str:
    """3 significant digits, positional between 0.001 and 1e6 (``0.0499``, ``1.35``, ``413``, ``5``)."""
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        if x == 0 or 1e-3 <= abs(x) < 1e6:
            return np.format_float_positional(float(f"{x:.3g}"), trim="-")
        return f"{x:.3g}"
    return str(x)


def time_columns(name: str, seconds: Sequence[float | None]) -> tuple[str, list[float | None]]:
    """A header with its unit and the values in it: ms when every value is under 1 s, else s."""
    finite = [abs(v) for v in seconds if v is not None]
    if finite and max(finite) < 1:
        return f"{name} (ms)", [None if v is None else v * 1e3 for v in seconds]
    return f"{name} (s)", list(seconds)


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
        elif isinstance(b, Clip):
            out.append(f"**{b.caption}** — {b.numbers} — [mp4]({b.video})\n\n![frames of {b.caption}]({b.strip})")
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
        elif isinstance(b, Clip):
            body.append(
                f'<figure class="clip"><figcaption><b>{e(b.caption)}</b><br>{e(b.numbers)}</figcaption>'
                f'<video controls preload="metadata" src="{e(b.video)}"></video>'
                f'<img class="strip" src="{e(b.strip)}" alt="frames of {e(b.caption)}"></figure>'
            )
        else:
            body.append(f'<p><img src="{e(b.path)}" alt="{e(b.alt)}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%}"
        "figure.clip{display:grid;grid-template-columns:16em 1fr;gap:0.5em 1em;margin:1em 0}"
        "figure.clip video{max-width:100%;max-height:320px}figure.clip img.strip{grid-column:1/3}"
        "@media print{figure.clip video{display:none}}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------- sections


def _params_label(params: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """The point's settings (``keys``; default: all but the prompt text) as ``k=v`` pairs."""
    keys = keys if keys is not None else [k for k in sorted(params) if k != "prompt"]
    return label(keys, [params.get(k) for k in keys])


def summary_section(records: Sequence[RunRecord], source: str) -> list[Block]:
    ok = sum(r.status == "ok" for r in records)
    env_keys = sorted({k for r in records for k in r.env} - {"machine"})
    env_rows = [[k, ", ".join(sorted({str(r.env[k]) for r in records if k in r.env}))] for k in env_keys]
    machines = {json.dumps(r.env["machine"]["fingerprint"], sort_keys=True) for r in records if r.env.get("machine")}
    described = (Fingerprint.from_json(json.loads(m)) for m in sorted(machines))
    env_rows += [["machine", "; ".join(f"{fp.describe()} (fingerprint {fp.id})" for fp in described)]] if machines else []
    keys = setting_keys(records)
    blocks: list[Block] = [
        Para(f"Results: {source} — {len(records)} runs, {ok} ok, {len(records) - ok} failed."),
        Para(f"One row per setting ({', '.join(keys)}): the settings that vary between the runs; "
             "n = runs of that setting averaged (prompts x seeds). Quality metrics are scored on the "
             "generated frames and waveform, not on the mp4 (an x264 encode, kept for people to watch)."),
    ]  # fmt: skip
    if env_rows:
        blocks.append(Table(["env", "values"], env_rows))
    return blocks


def stage_section(records: Sequence[RunRecord], image: str) -> tuple[list[Block], Figure | None]:
    by = setting_keys(records)
    rows = stage_table(records, by)
    if not rows:
        return [Para("No ok runs with timings.")], None
    names = list(rows[0].stages)
    columns = [time_columns(s, [r.stages[s] for r in rows]) for s in names]
    columns += [time_columns("other", [r.other for r in rows]), time_columns("total", [r.total for r in rows])]
    table = Table(
        [*short_names(by).values(), "n", *(header for header, _ in columns)],
        [[*r.group, r.n, *(values[i] for _, values in columns)] for i, r in enumerate(rows)],
    )
    return [table, Image(image, "time per stage by setting")], plot_stage_times(records, by)


def throughput_section(records: Sequence[RunRecord]) -> list[Block]:
    by = setting_keys(records)
    ok = [r for r in records if r.status == "ok"]
    rows = []
    for group, rs in group_records(ok, by).items():
        step = mean_or_none(statistics.fmean(r.step_times) if r.step_times else None for r in rs)
        peak = mean_or_none(r.peak_memory_bytes / GIB if r.peak_memory_bytes else None for r in rs)
        tflops, mfu = mean_or_none(r.tflops_per_s for r in rs), mean_or_none(r.mfu for r in rs)
        load, warmup = mean_or_none(r.load_s for r in rs), mean_or_none(r.warmup_s for r in rs)
        rows.append([*group, len(rs), step, peak, tflops, None if mfu is None else 100 * mfu, load, warmup])
    if not rows:
        return []
    k = len(by) + 1
    step_header, steps = time_columns("mean step", [row[k] for row in rows])
    rows = [[*row[:k], step, *row[k + 1 :]] for row, step in zip(rows, steps)]
    headers = [*short_names(by).values(), "n", step_header, "peak memory (GiB)", "DiT TFLOP/s", "MFU (%)",
               "load (s)", "warm-up (s)"]  # fmt: skip
    note = Para("Stage times are warm: the median of the timed runs after untimed warm-up runs at the same "
                "shapes. load = building the pipeline and its first DiT (– where an earlier point of the process "
                "did); warm-up = the untimed runs (first-call costs). Peak memory is each point's own.")  # fmt: skip
    return [note, Table(headers, rows)]


def quality_section(records: Sequence[RunRecord]) -> list[Block]:
    """Mean metrics per setting, and the settings in which each row's reference differs."""
    by = setting_keys(records)
    ok = [r for r in records if r.status == "ok"]
    metrics = metrics_present(ok)
    if not metrics:
        return [Para("No metrics were recorded.")]
    by_id = {r.run_id: r for r in ok}
    rows = []
    for group, rs in group_records(ok, by).items():
        refs = [by_id[r.artifacts["reference_run_id"]] for r in rs if r.artifacts.get("reference_run_id") in by_id]
        reference = "; ".join(sorted({setting_diff(rs[0], ref, by) for ref in refs})) or "–"
        values = [mean_or_none(r.metrics.get(m) for r in rs) for m in metrics]
        rows.append([*group, len(rs), reference, *values])
    headers = [*short_names(by).values(), "n", "reference (its settings)", *(_metric_header(m) for m in metrics)]
    return [Para("Metrics that compare two clips (PSNR, SSIM, LPIPS) score each row against the run that "
                 "differs from it in the fewest settings among the more faithful ones (more DiT FLOPs, "
                 "then unquantized); a row without a reference is one."), Table(headers, rows)]  # fmt: skip


def _metric_header(name: str) -> str:
    unit = {"psnr": "dB", "av_offset_frames": "frames", "syncnet_offset_frames": "frames", "audio_duration_diff_s": "s"}
    spec = metric_spec(name)
    arrow = "" if spec is None else (" ↑" if spec.higher_is_better else " ↓")
    return f"{name} ({unit[name]}){arrow}" if name in unit else f"{name}{arrow}"


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
        keys = list(front[0].setting) if front else []
        blocks.append(
            Table(
                [*short_names(keys).values(), "n", "total (s)", _metric_header(metric)],
                [[*(p.setting[k] for k in keys), p.n, p.total_s, p.value] for p in front],
            )
        )
    return blocks, figures


def regression_section(cmp: Comparison, baseline_source: str) -> list[Block]:
    blocks: list[Block] = [
        Para(
            f"Baseline: {baseline_source}. Matched {cmp.matched} points by identical params "
            f"({cmp.only_current} only in these results, {cmp.only_baseline} only in the baseline). "
            f"Thresholds: time ratio > {cmp.time_threshold} with its 95% interval above 1, metric worse by > "
            f"{cmp.metric_threshold:.1%}."
        )
    ]
    blocks += [Para(n) for n in cmp.notes]
    headers = ["kind", "what", "point", "baseline", "current", "worse by", "detail"]
    if cmp.regressions:
        rows = [[r.kind, r.name, _params_label(r.params, cmp.keys), r.baseline, r.current, _severity(r), r.detail]
                for r in cmp.regressions]  # fmt: skip
        blocks.append(Table(headers, rows))
    else:
        blocks.append(Para("No regressions beyond the thresholds."))
    if cmp.inconclusive:
        blocks.append(Para(f"Inconclusive total times: the repeats can neither show a slowdown beyond "
                           f"{cmp.time_threshold} nor rule one out (fewer than 2 timed repeats on a side give no "
                           "interval; more repeats, harness.repeats >= 3 on both runs, narrow it):"))  # fmt: skip
        rows = [[r.kind, r.name, _params_label(r.params, cmp.keys), r.baseline, r.current, _severity(r), r.detail]
                for r in cmp.inconclusive]  # fmt: skip
        blocks.append(Table(headers, rows))
    unmatched = [("these results", p) for p in cmp.unmatched_current]
    unmatched += [("the baseline", p) for p in cmp.unmatched_baseline]
    if unmatched:
        rows = [[where, _params_label(p, cmp.keys)] for where, p in unmatched]
        blocks += [Para("Points without an identical point (all settings equal) on the other side:"),
                   Table(["only in", "point"], rows)]  # fmt: skip
    return blocks


def _severity(r: Regression) -> str:
    return "newly failing" if math.isinf(r.severity) else f"{r.severity:+.0%}"


def failures_section(records: Sequence[RunRecord]) -> list[Block]:
    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return [Para("No failed runs.")]
    rows = [[r.run_id, _params_label(r.params), first_line(r.error), r.finished_at] for r in failed]
    return [Table(["run_id", "point", "error", "finished"], rows)]


def clips_section(records: Sequence[RunRecord], media: Callable[[RunRecord], tuple[str, str] | None]) -> list[Block]:
    """One clip per setting (its first ok run with media) next to its time and metrics;
    ``media(run)`` gives its (mp4, frame strip) paths relative to the report, or None."""
    by = setting_keys(records)
    ok = [r for r in records if r.status == "ok"]
    blocks: list[Block] = []
    for group, rs in group_records(ok, by).items():
        found = next(((r, m) for r in rs if (m := media(r)) is not None), None)
        if found is None:
            continue
        r, (video, strip) = found
        numbers = [f"total {fmt(r.total_time)} s"] if r.total_time is not None else []
        numbers += [f"{m} {fmt(v)}" for m, v in r.metrics.items() if v is not None]
        blocks.append(Clip(label(by, group), video, strip, ", ".join(numbers)))
    return blocks or [Para("No clips were kept.")]
