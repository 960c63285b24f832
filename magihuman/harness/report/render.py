"""How a report is written: document blocks, the sections built from comparisons, and
their Markdown and HTML renderings."""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from matplotlib.figure import Figure

from magihuman.harness.machine import Fingerprint
from magihuman.harness.report.analysis import (
    GIB,
    SETTING_KEYS,
    Comparison,
    Regression,
    first_line,
    group_records,
    label,
    mean_or_none,
    metric_label,
    metric_points,
    metrics_present,
    missing_reasons,
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
    env_keys = sorted({k for r in records for k in r.env} - {"machine"})
    env_rows = [[k, ", ".join(sorted({str(r.env[k]) for r in records if k in r.env}))] for k in env_keys]
    machines = {json.dumps(r.env["machine"]["fingerprint"], sort_keys=True) for r in records if r.env.get("machine")}
    described = (Fingerprint.from_json(json.loads(m)) for m in sorted(machines))
    env_rows += [["machine", "; ".join(f"{fp.describe()} (fingerprint {fp.id})" for fp in described)]] if machines else []
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
        step = mean_or_none(statistics.fmean(r.step_times) if r.step_times else None for r in rs)
        peak = mean_or_none(r.peak_memory_bytes / GIB if r.peak_memory_bytes else None for r in rs)
        tflops, mfu = mean_or_none(r.tflops_per_s for r in rs), mean_or_none(r.mfu for r in rs)
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
            f"Baseline: {baseline_source}. Matched {cmp.matched} points by identical params "
            f"({cmp.only_current} only in these results, {cmp.only_baseline} only in the baseline). "
            f"Thresholds: time ratio > {cmp.time_threshold} and significant, metric worse by > "
            f"{cmp.metric_threshold:.1%}."
        )
    ]
    blocks += [Para(n) for n in cmp.notes]
    headers = ["kind", "what", "point", "baseline", "current", "worse by", "detail"]
    if cmp.regressions:
        rows = [[r.kind, r.name, _params_label(r.params), r.baseline, r.current, _severity(r), r.detail]
                for r in cmp.regressions]  # fmt: skip
        blocks.append(Table(headers, rows))
    else:
        blocks.append(Para("No regressions beyond the thresholds."))
    if cmp.untested:
        blocks.append(Para(f"Slower by more than the threshold but untested: fewer than 2 timed repeats on a side, "
                           "so noise cannot be told apart (set harness.repeats >= 3 on both runs):"))  # fmt: skip
        rows = [[r.kind, r.name, _params_label(r.params), r.baseline, r.current, _severity(r), r.detail]
                for r in cmp.untested]  # fmt: skip
        blocks.append(Table(headers, rows))
    return blocks


def _severity(r: Regression) -> str:
    return "newly failing" if math.isinf(r.severity) else f"{r.severity:+.0%}"


def failures_section(records: Sequence[RunRecord]) -> list[Block]:
    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return [Para("No failed runs.")]
    rows = [[r.run_id, _params_label(r.params), first_line(r.error), r.finished_at] for r in failed]
    return [Table(["run_id", "point", "error", "finished"], rows)]


