"""``magihuman-report``: a sweep's results store as Markdown + HTML with plots.

A small pipeline, one module per step:

- :mod:`.analysis` — what is compared: metric directions, runs grouped into settings,
  per-stage times, quality vs latency (Pareto front), regressions against a baseline;
- :mod:`.plots` — how it is drawn (matplotlib figures);
- :mod:`.render` — how it is written: document blocks, the report's sections, Markdown / HTML;
- :mod:`.files` — reading the store and writing the report's files atomically;
- :mod:`.cli` — the command line.

The names below are the public API (``notebooks/compare_settings.ipynb`` uses them).
"""

from magihuman.harness.report.cli import main
from magihuman.harness.report.analysis import (
    Comparison,
    MetricSpec,
    Regression,
    SettingPoint,
    StageRow,
    choose_references,
    compare,
    fidelity,
    group_records,
    label,
    latest_by_point,
    metric_label,
    metric_points,
    metric_spec,
    metrics_present,
    missing_reasons,
    pareto_front,
    point_key,
    setting_diff,
    setting_keys,
    setting_points,
    short_names,
    stage_table,
    stages_present,
    varying_keys,
)
from magihuman.harness.report.files import ReportFiles, figure_png, load_records, write_atomic, write_report
from magihuman.harness.report.plots import plot_pareto, plot_stage_times
from magihuman.harness.report.render import (
    Block,
    Heading,
    Image,
    Para,
    Table,
    failures_section,
    fmt,
    pareto_section,
    quality_section,
    regression_section,
    stage_section,
    summary_section,
    throughput_section,
    to_html,
    to_markdown,
)

__all__ = [
    "Block",
    "Comparison",
    "Heading",
    "Image",
    "MetricSpec",
    "Para",
    "Regression",
    "ReportFiles",
    "SettingPoint",
    "StageRow",
    "Table",
    "choose_references",
    "compare",
    "failures_section",
    "fidelity",
    "figure_png",
    "fmt",
    "group_records",
    "label",
    "latest_by_point",
    "load_records",
    "main",
    "metric_label",
    "metric_points",
    "metric_spec",
    "metrics_present",
    "missing_reasons",
    "pareto_front",
    "pareto_section",
    "plot_pareto",
    "plot_stage_times",
    "point_key",
    "quality_section",
    "regression_section",
    "setting_diff",
    "setting_keys",
    "setting_points",
    "short_names",
    "stage_section",
    "stage_table",
    "stages_present",
    "summary_section",
    "throughput_section",
    "to_html",
    "to_markdown",
    "varying_keys",
    "write_atomic",
    "write_report",
]
