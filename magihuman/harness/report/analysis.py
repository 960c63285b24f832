"""What a report compares: metric directions, grouping of runs into settings, per-stage
times, quality vs latency (Pareto front) and regressions against a baseline.

Pure functions over ``RunRecord`` lists; nothing here draws or writes.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

from magihuman.eval.metrics import MetricSpec, output_specs
from magihuman.harness.machine import Fingerprint, differences
from magihuman.harness.regression import Change, normalised, unpaired_change
from magihuman.harness.store import RESOLUTIONS, STAGES, RunRecord

GIB = 2**30
T = TypeVar("T")


# ---------------------------------------------------------------- metrics


def metric_spec(name: str) -> MetricSpec | None:
    """Direction of a recorded metric, from the eval's one declaration (``eval.metrics``);
    None for a name it does not declare."""
    return output_specs().get(name)


def metric_label(name: str) -> str:
    spec = metric_spec(name)
    if spec is None:
        return f"{name} (direction unknown: taken as higher is better)"
    shown = f"|{name}|" if spec.magnitude else name
    return f"{shown} ({'higher' if spec.higher_is_better else 'lower'} is better)"


# ---------------------------------------------------------------- grouping


def _order(key: str, value: Any) -> tuple:
    """Sort key: resolutions in size order, None last, numbers before strings."""
    if value is None:
        return (3, "")
    if key == "resolution" and value in RESOLUTIONS:
        return (0, RESOLUTIONS.index(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def group_by(items: Iterable[T], by: Sequence[str], values: Callable[[T], dict[str, Any]]) -> dict[tuple, list[T]]:
    groups: dict[tuple, list[T]] = {}
    for item in items:
        groups.setdefault(tuple(values(item).get(k) for k in by), []).append(item)
    return dict(sorted(groups.items(), key=lambda kv: [_order(k, v) for k, v in zip(by, kv[0])]))


def group_records(records: Iterable[RunRecord], by: Sequence[str]) -> dict[tuple, list[RunRecord]]:
    """Records grouped by the values of params ``by``, groups in display order."""
    return group_by(records, by, lambda r: r.params)


def label(by: Sequence[str], values: Sequence[Any]) -> str:
    """``quant=int8 duration=2`` style label of a group (see :func:`short_names`)."""
    names = short_names(by)
    return " ".join(f"{names[k]}={v}" for k, v in zip(by, values))


def mean_or_none(xs: Iterable[float | None]) -> float | None:
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


# ---------------------------------------------------------------- pareto


@dataclass(frozen=True)
class SettingPoint:
    """One setting (the params in ``setting_keys``) averaged over prompts and seeds."""

    setting: dict[str, Any]
    total_s: float
    value: float  # mean metric score (|x| for magnitude metrics)
    n: int
    on_front: bool = False


def setting_points(records: Sequence[RunRecord], metric: str) -> list[SettingPoint]:
    """Mean total time and metric per setting, over ok runs that have both."""
    spec = metric_spec(metric) or MetricSpec(higher_is_better=True)
    usable = [
        r for r in records if r.status == "ok" and r.total_time is not None and r.metrics.get(metric) is not None
    ]
    keys = setting_keys(records)
    points = []
    for group, rs in group_records(usable, keys).items():
        total = statistics.fmean(r.total_time for r in rs)
        value = statistics.fmean(spec.score(r.metrics[metric]) for r in rs)
        points.append(SettingPoint(dict(zip(keys, group)), total, value, len(rs)))
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
    spec = metric_spec(metric) or MetricSpec(higher_is_better=True)
    return pareto_front(setting_points(records, metric), spec.higher_is_better)


def metrics_present(records: Iterable[RunRecord]) -> list[str]:
    """Metric names of ok runs: declared ones in declaration order, then the others sorted."""
    seen = {k for r in records if r.status == "ok" for k in r.metrics}
    known = output_specs()
    return [m for m in known if m in seen] + sorted(seen - set(known))


def missing_reasons(records: Iterable[RunRecord], metric: str) -> list[str]:
    """Distinct ``metric_notes`` given for runs where ``metric`` is None."""
    reasons = {r.metric_notes.get(metric, "no reason recorded") for r in records if r.metrics.get(metric) is None}
    return sorted(reasons)


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
    """Result of ``compare``: regressions (most severe first) and what could not be compared.

    ``inconclusive``: points whose total time is neither slower nor not slower by the rules of
    ``magihuman.harness.regression`` (the interval reaches past 1 + threshold without lying
    above 1, or fewer than two timed repeats on a side); ``severity`` there is the ratio - 1
    and ``detail`` says what the run could have detected.
    """

    regressions: list[Regression]
    matched: int
    unmatched_current: list[dict[str, Any]]  # params of points the baseline does not have
    unmatched_baseline: list[dict[str, Any]]
    time_threshold: float
    metric_threshold: float
    notes: list[str] = field(default_factory=list)
    inconclusive: list[Regression] = field(default_factory=list)
    keys: tuple[str, ...] = ()  # the settings that vary over both sides (to label points)


    @property
    def only_current(self) -> int:
        return len(self.unmatched_current)

    @property
    def only_baseline(self) -> int:
        return len(self.unmatched_baseline)


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


def _machine(rec: RunRecord) -> tuple[Fingerprint, float] | None:
    """A record's machine fingerprint and calibration TFLOP/s (None: recorded before fingerprints)."""
    machine = rec.env.get("machine")
    if not machine:
        return None
    return Fingerprint.from_json(machine["fingerprint"]), float(machine["calibration"]["tflops"])


def time_change(base: RunRecord, cur: RunRecord) -> tuple[Change, bool] | None:
    """Total-time change of one point by the harness's rules (``magihuman.harness.regression``):
    the timed repeats of each side, in seconds when both ran on the same machine fingerprint,
    else each multiplied by its own run's calibration TFLOP/s (normalised; the bool says so).
    None when either side has no machine record: then which machine a time is from is unknown."""
    bm, cm = _machine(base), _machine(cur)
    if bm is None or cm is None:
        return None
    bt = base.repeat_times or [base.total_time]
    ct = cur.repeat_times or [cur.total_time]
    if bm[0] == cm[0]:
        return unpaired_change(bt, ct), False
    return unpaired_change([normalised(t, bm[1]) for t in bt], [normalised(t, cm[1]) for t in ct]), True


def _time_regression(base: RunRecord, cur: RunRecord, change: Change, normalised_: bool) -> Regression:
    ci = "" if change.low is None else f"95% CI [{change.low:.2f}, {change.high:.2f}], "
    how = "calibration-normalised (different machines), " if normalised_ else ""
    detectable = change.detectable()
    can = "no interval" if detectable is None else f"detectable {detectable:.0%}"
    detail = f"{ci}{how}{change.n_base} vs {change.n_head} repeats, {can}; {_worst_stage(base, cur)}".rstrip("; ")
    return Regression(cur.params, "time", "total", base.total_time, cur.total_time, change.ratio - 1, detail)


def compare(
    current: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    time_threshold: float = 1.10,
    metric_threshold: float = 0.05,
) -> Comparison:
    """Points matched by identical params (all of their settings): slower than ``time_threshold``
    x the baseline (``time_change``; the verdict of ``Change.verdict``; inconclusive ones listed apart),
    metrics worse by more than ``metric_threshold`` (relative), or failing where the baseline
    was ok. The points without an identical one on the other side are listed as unmatched."""
    cur, base = latest_by_point(current), latest_by_point(baseline)
    shared = [k for k in cur if k in base]
    found: list[Regression] = []
    inconclusive: list[Regression] = []
    unknown: set[str] = set()
    how: dict[str, int] = {"seconds": 0, "normalised": 0, "no machine record": 0}
    machines: set[tuple[Fingerprint, Fingerprint]] = set()
    for k in shared:
        c, b = cur[k], base[k]
        if b.status != "ok":
            continue
        if c.status != "ok":
            found.append(Regression(c.params, "failure", "status", None, None, math.inf, first_line(c.error)))
            continue
        if c.total_time is not None and b.total_time:
            timed = time_change(b, c)
            if timed is None:
                how["no machine record"] += 1
            else:
                change, is_normalised = timed
                how["normalised" if is_normalised else "seconds"] += 1
                if is_normalised:
                    machines.add((_machine(b)[0], _machine(c)[0]))
                verdict = change.verdict(time_threshold - 1)
                if verdict == "slower":
                    found.append(_time_regression(b, c, change, is_normalised))
                elif verdict == "inconclusive":
                    inconclusive.append(_time_regression(b, c, change, is_normalised))
        for name, bv in b.metrics.items():
            cv = c.metrics.get(name)
            if bv is None or cv is None:
                continue
            spec = metric_spec(name)
            if spec is None:
                unknown.add(name)
                continue
            worse = spec.worsening(bv, cv)
            if worse > metric_threshold:
                found.append(Regression(c.params, "metric", name, bv, cv, worse, f"delta {cv - bv:+.4g}"))
    found.sort(key=lambda r: (-r.severity, point_key(r.params), r.name))
    inconclusive.sort(key=lambda r: (-r.severity, point_key(r.params)))
    notes = []
    for fb, fc in sorted(machines, key=lambda m: (m[0].id, m[1].id)):
        notes.append(f"DIFFERENT MACHINES: times compared only after multiplying each by its run's calibration "
                     f"TFLOP/s (normalised), never in seconds. Baseline {fb.describe()}; these results "
                     f"{fc.describe()}. Differences: {'; '.join(differences(fb, fc))}.")  # fmt: skip
    if how["no machine record"]:
        notes.append(f"{how['no machine record']} points: times not compared, a side has no machine record "
                     "(recorded before fingerprints), so which machine its times are from is unknown.")  # fmt: skip
    notes.append(f"Times: {how['seconds']} points compared in seconds (same machine), {how['normalised']} "
                 "normalised; a point is slower when the 95% interval of its repeats' ratio (Welch t on log "
                 "times) excludes 1 and the ratio exceeds the threshold.")  # fmt: skip
    notes += [f"metric {m!r} not compared: direction unknown (declare it in eval.metrics.METRICS)"
              for m in sorted(unknown)]  # fmt: skip
    only_cur = [cur[k].params for k in cur if k not in base]
    only_base = [base[k].params for k in base if k not in cur]
    keys = varying_keys([*(r.params for r in cur.values()), *(r.params for r in base.values())])
    return Comparison(found, len(shared), only_cur, only_base, time_threshold, metric_threshold, notes, inconclusive,
                      keys)  # fmt: skip


# ---------------------------------------------------------------- settings and references

# Params that pick what is generated rather than how: runs that differ only in these are
# replicates of one setting (averaged, counted in ``n``).
REPLICATE_KEYS: tuple[str, ...] = ("prompt_id", "prompt", "image", "audio", "seed")
# Params two clips must share to be compared frame by frame (PSNR, SSIM, LPIPS).
COMPARABLE_KEYS: tuple[str, ...] = (*REPLICATE_KEYS, "mode", "resolution", "duration")
# Display order of the settings most sweeps vary; the others follow, sorted.
SETTING_ORDER: tuple[str, ...] = ("model", "resolution", "mode", "duration", "sampler", "sampler.num_steps",
                                  "sampler.guidance_scale", "quant", "offload", "parallel")  # fmt: skip


def varying_keys(points: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """The params that vary between ``points``, in display order; ``("resolution",)`` when
    nothing varies. Left out: replicate keys (prompt, seed), and a group's fields that only
    follow its choice (``sampler.cfg_passes`` when ``sampler`` varies and fixes it)."""
    points = list(points)

    def text(p: dict[str, Any], k: str) -> str:
        return json.dumps(p.get(k), sort_keys=True, default=str)

    keys = dict.fromkeys(k for p in points for k in p)
    varying = [k for k in keys if k not in REPLICATE_KEYS and len({text(p, k) for p in points}) > 1]

    def implied(k: str) -> bool:
        group = k.rpartition(".")[0]
        if group not in varying:
            return False
        values: dict[str, set[str]] = {}
        for p in points:
            values.setdefault(text(p, group), set()).add(text(p, k))
        return all(len(v) == 1 for v in values.values())

    varying = [k for k in varying if not implied(k)]
    ordered = [k for k in SETTING_ORDER if k in varying] + sorted(set(varying) - set(SETTING_ORDER))
    return tuple(ordered) or ("resolution",)


def setting_keys(records: Iterable[RunRecord]) -> tuple[str, ...]:
    """:func:`varying_keys` of the records' params: what sets one setting apart from another."""
    return varying_keys(r.params for r in records)


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Display names: the last part of a dotted param, unless two keys would share it."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def fidelity(r: RunRecord) -> tuple:
    """How close a run is to the release's full computation, for choosing references: DiT
    FLOPs, then weight bits (unquantized first), then fewer settings switched on (``none``)."""
    bits = 16 if r.params.get("quant") in (None, "none") else 8
    plain = sum(v in (None, "none", False) for v in r.params.values())
    return (r.flops or 0.0, bits, plain)


def choose_references(records: Sequence[RunRecord]) -> dict[str, RunRecord | None]:
    """For each ok run, the run its quality is scored against (None: it is a reference).

    Candidates share the run's ``COMPARABLE_KEYS`` and rank higher in :func:`fidelity`; of
    those, the one that differs in the fewest settings, then the nearest in fidelity. For
    ``quant=none,int8`` the int8 run is scored against the none run of the same settings.
    """
    ok = [r for r in records if r.status == "ok"]
    keys = setting_keys(ok)
    out: dict[str, RunRecord | None] = {}
    for r in ok:
        same = [c for c in ok if all(c.params.get(k) == r.params.get(k) for k in COMPARABLE_KEYS)]
        better = [c for c in same if fidelity(c) > fidelity(r)]
        differing = {c.run_id: sum(c.params.get(k) != r.params.get(k) for k in keys if k not in COMPARABLE_KEYS)
                     for c in better}  # fmt: skip
        out[r.run_id] = min(better, key=lambda c: (differing[c.run_id], fidelity(c)), default=None)
    return out


def setting_diff(run: RunRecord, reference: RunRecord, keys: Sequence[str]) -> str:
    """``quant=none`` style: the reference's values where they differ from the run's."""
    names = short_names(keys)
    diff = [f"{names[k]}={reference.params.get(k)}" for k in keys if reference.params.get(k) != run.params.get(k)]
    return " ".join(diff) or "same settings"
