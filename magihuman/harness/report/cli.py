"""``magihuman-report RESULTS [--baseline OTHER] [--out DIR]``: a sweep's results as Markdown + HTML.

With ``--baseline`` it also checks for regressions, by the rules of ``magihuman.harness.regression``,
and says so in its exit code: 0 none (every time comparison "not slower"), 1 a regression (a point
slower, a metric worse or a newly failing point), 2 bad input, 3 no regression but some
total times inconclusive (the repeats can neither show nor rule out a slowdown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from magihuman.cli.errors import cli_errors
from magihuman.harness.regression import EXIT_INCONCLUSIVE, EXIT_SLOWER
from magihuman.harness.report.analysis import compare
from magihuman.harness.report.files import load_records, write_report
from magihuman.harness.store import StoreError


@cli_errors("magihuman-report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="magihuman-report", description=__doc__.splitlines()[0].split(": ", 1)[1],
                                     epilog="exit codes: 0 ok, 1 regression, 2 bad input, 3 inconclusive times")
    parser.add_argument("results", type=Path, help="results store (SQLite) of the sweep")
    parser.add_argument("--baseline", type=Path, help="another results store to check for regressions against")
    parser.add_argument("--out", type=Path, help="output directory (default: RESULTS's directory/report)")
    parser.add_argument("--time-threshold", type=float, default=1.10,
                        help="flag total time ratios above this that the repeats show to be significant")
    parser.add_argument("--metric-threshold", type=float, default=0.05, help="flag metrics worse by more than this fraction")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.results)
        baseline = load_records(args.baseline) if args.baseline else None
    except (FileNotFoundError, StoreError) as e:
        parser.error(str(e))
    if baseline is not None and compare(records, baseline).matched == 0:
        parser.error(f"the baseline {args.baseline} has no point with the same params as {args.results}: "
                     "nothing to compare, so no regression check was made")  # fmt: skip
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
    cmp = files.comparison
    if cmp is None:
        return 0
    print(f"{len(cmp.regressions)} regressions against {args.baseline}, {len(cmp.inconclusive)} inconclusive times")
    return EXIT_SLOWER if cmp.regressions else EXIT_INCONCLUSIVE if cmp.inconclusive else 0


if __name__ == "__main__":
    raise SystemExit(main())
