"""The comparison rules (ratio, interval, verdict), machine records, and ``magihuman-bench diff``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from magihuman.harness import bench
from magihuman.harness.machine import Calibration, Fingerprint, calibrate, differences, fingerprint
from magihuman.harness.regression import Change, normalised, paired_change, unpaired_change


def test_paired_change_is_scipys_paired_t_interval_on_logs():
    base = [0.101, 0.097, 0.120, 0.099, 0.104, 0.095]
    head = [0.131, 0.126, 0.150, 0.128, 0.139, 0.121]
    c = paired_change(base, head)
    ci = stats.ttest_rel(np.log(head), np.log(base)).confidence_interval(0.95)
    assert c.paired and (c.n_base, c.n_head) == (6, 6)
    assert c.low == pytest.approx(math.exp(ci.low)) and c.high == pytest.approx(math.exp(ci.high))
    assert c.ratio == pytest.approx(math.exp(np.mean(np.log(head) - np.log(base))))
    assert c.verdict(0.10) == "slower"


def test_unpaired_change_is_welchs_interval_on_logs():
    base, head = [1.0, 1.1, 0.95, 1.05], [0.8, 0.85, 0.78]
    c = unpaired_change(base, head)
    ci = stats.ttest_ind(np.log(head), np.log(base), equal_var=False).confidence_interval(0.95)
    assert c.low == pytest.approx(math.exp(ci.low)) and c.high == pytest.approx(math.exp(ci.high))
    assert c.verdict(0.10) == "not slower"


@pytest.mark.parametrize(
    "change, verdict",
    [
        (Change(1.30, 1.20, 1.40, 5, 5, True), "slower"),
        (Change(1.08, 1.02, 1.09, 5, 5, True), "not slower"),  # significant, but a 10% slowdown is ruled out
        (Change(1.08, 1.02, 1.14, 5, 5, True), "inconclusive"),  # significant; 10% not ruled out, not shown
        (Change(1.40, 0.95, 2.00, 5, 5, True), "inconclusive"),  # large but not significant
        (Change(1.00, 0.89, 1.48, 5, 5, True), "inconclusive"),  # the "no significant change"
        (Change(0.80, 0.70, 0.90, 5, 5, True), "not slower"),
        (Change(1.50, None, None, 1, 1, False), "inconclusive"),  # no interval
    ],
)
def test_three_verdicts(change, verdict):
    assert change.verdict(0.10) == verdict


def test_detectable_change_is_the_slowdown_flagged_with_80_percent_power():
    rng = np.random.default_rng(0)
    base = np.exp(rng.normal(0, 0.05, 8))
    head = base * np.exp(rng.normal(0, 0.05, 8))
    c = paired_change(list(base), list(head))
    d = np.log(head) - np.log(base)
    se = d.std(ddof=1) / np.sqrt(8)
    assert c.detectable() == pytest.approx(math.exp((stats.t.ppf(0.975, 7) + stats.t.ppf(0.8, 7)) * se) - 1)
    # simulated: a true slowdown of exactly that size is flagged (interval above 1) in ~80% of runs
    flagged = 0
    for _ in range(2000):
        noise = rng.normal(0, d.std(ddof=1), 8)
        low = paired_change([1.0] * 8, list(np.exp(math.log1p(c.detectable()) + noise))).low
        flagged += low > 1
    assert 0.74 < flagged / 2000 < 0.86
    assert Change(1.0, 1.0, 1.0, 2, 2, False).detectable() == 0.0  # exact counts: any change shows
    assert Change(1.0, None, None, 1, 1, False).detectable() is None


def test_bad_times_and_shapes_are_refused():
    with pytest.raises(ValueError, match="one base and one head time per round"):
        paired_change([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive and finite"):
        unpaired_change([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="calibration TFLOP/s must be positive"):
        normalised(1.0, 0.0)


def test_fingerprint_and_calibration_round_trip():
    fp = fingerprint("cpu")
    assert fp.threads >= 1 and fp.torch and fp.gpu is None and fp.cpu
    assert Fingerprint.from_json(json.loads(json.dumps(fp.to_json()))) == fp
    cal = calibrate("cpu", time.process_time, repeats=2)
    assert cal.tflops > 0 and cal.dtype == "float32" and cal.timer == "time.process_time"
    assert Calibration.from_json(cal.to_json()) == cal
    other = Fingerprint(**{**fp.__dict__, "cpu": "another CPU", "threads": fp.threads + 1})
    assert other.id != fp.id
    assert differences(fp, other) == [f"cpu: {fp.cpu} -> another CPU", f"threads: {fp.threads} -> {fp.threads + 1}"]
    with pytest.raises(ValueError, match="fingerprint is missing"):
        Fingerprint.from_json({"cpu": "x"})


def _benchmark_json(path, medians: dict[str, float], machine: dict | None):
    data = {"benchmarks": [{"name": n, "stats": {"median": m}} for n, m in medians.items()]}
    if machine:
        data["magihuman"] = machine
    path.write_text(json.dumps(data))
    return path


def _machine(cpu: str, tflops: float) -> dict:
    fp = Fingerprint(cpu, ("avx2",), 2, 1, None, None, "2.14.1", None)
    cal = Calibration(tflops, 1024, "float32", "cpu", "time.process_time", 9)
    return {"fingerprint": fp.to_json(), "calibration": cal.to_json()}


def test_diff_same_machine_compares_seconds(tmp_path):
    m = _machine("cpu A", 0.1)
    base = [_benchmark_json(tmp_path / f"b{i}.json", {"fwd": t, "pack": 0.05}, m) for i, t in enumerate((1.0, 1.02))]
    head = [_benchmark_json(tmp_path / f"h{i}.json", {"fwd": t, "pack": 0.05}, m) for i, t in enumerate((1.5, 1.48))]
    report = bench.diff(base, head)
    assert report.unit == "s" and "same machine fingerprint" in report.notes[1]
    verdicts = {c.name: c.verdict for c in report.changes}
    assert verdicts == {"fwd": "slower", "pack": "not slower"}


def test_diff_across_machines_says_so_and_normalises(tmp_path):
    # head's machine is twice as fast (calibration) and its times are half: no change once normalised
    old, new = _machine("old CPU", 0.05), _machine("new CPU", 0.1)
    base = [_benchmark_json(tmp_path / f"b{i}.json", {"fwd": t}, old) for i, t in enumerate((2.0, 2.1))]
    head = [_benchmark_json(tmp_path / f"h{i}.json", {"fwd": t}, new) for i, t in enumerate((1.0, 1.05))]
    report = bench.diff(base, head)
    assert report.unit == "calibration work units"
    assert any(n.startswith("DIFFERENT MACHINES") and "cpu: old CPU -> new CPU" in n for n in report.notes)
    (c,) = report.changes
    # two runs a side that differ by 5%: the ratio is 1, but the interval cannot rule out +10%
    assert c.change.ratio == pytest.approx(1.0, rel=1e-6) and c.verdict == "inconclusive"
    md = report.to_markdown()
    assert "| benchmark | base median (calibration work units) |" in md and "\n|---|---|---|---|---|---|---|\n" in md


def test_diff_refuses_a_file_without_machine(tmp_path):
    old = _benchmark_json(tmp_path / "old.json", {"fwd": 1.0}, None)
    new = _benchmark_json(tmp_path / "new.json", {"fwd": 1.0}, _machine("cpu", 0.1))
    with pytest.raises(bench.BenchError, match="records no machine fingerprint"):
        bench.diff([old], [new])


def test_saved_baseline_records_its_machine():
    (saved,) = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "baseline").rglob("*.json"))
    data = json.loads(saved.read_text())
    fp = Fingerprint.from_json(data["magihuman"]["fingerprint"])
    cal = Calibration.from_json(data["magihuman"]["calibration"])
    assert "EPYC" in fp.cpu and fp.threads == 1 and cal.tflops > 0
