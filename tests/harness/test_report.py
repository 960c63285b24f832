"""Report: tables, plots, Pareto front, regression detection, CLI."""

from __future__ import annotations

import json

from dataclasses import replace

import pytest
from PIL import Image

from magihuman.harness import report
from magihuman.harness.report import SettingPoint, choose_references, compare, pareto_front, setting_keys, stage_table
from tests.harness.synthetic import digest, fill_store, grid, machine, make_record, write_foreign_file


@pytest.fixture(scope="module")
def records():
    return grid(failures=2)


def _slower(rec, factor, **changes):
    """``rec`` with its denoise stage ``factor`` x slower (total and every repeat too)."""
    extra = rec.timings["base_denoise"] * (factor - 1)
    timings = rec.timings | {"base_denoise": rec.timings["base_denoise"] + extra, "total": rec.timings["total"] + extra}
    repeats = [t + extra for t in rec.repeat_times]
    env = rec.env | {"git_commit": "def456"}
    return replace(rec, timings=timings, repeat_times=repeats, env=env, run_id=rec.run_id + "x", **changes)


def test_stage_table_groups_and_sums(records):
    rows = stage_table(records, ("resolution",))
    assert [r.group for r in rows] == [("256p",), ("540p",)]
    assert sum(r.n for r in rows) == len(records) - 2
    for r in rows:
        assert r.total == pytest.approx(sum(r.stages.values()) + r.other)
        assert r.stages["base_denoise"] > 0
    assert "image_encode" not in rows[0].stages  # no run reported it


def test_pareto_front_marks_non_dominated():
    def pt(t, v):
        return SettingPoint({}, t, v, 1)

    points = pareto_front([pt(1, 10), pt(2, 20), pt(3, 15), pt(2, 20), pt(4, 30)])
    assert [p.on_front for p in points] == [True, True, False, True, True]
    lower = pareto_front([pt(1, 0.5), pt(2, 0.2), pt(3, 0.3)], higher_is_better=False)
    assert [p.on_front for p in lower] == [True, True, False]


def test_pareto_points_average_prompts_and_skip_missing(records):
    points = report.metric_points(records, "psnr")
    assert len(points) == 2 * 2 * 3 * 2 - 1  # settings; both prompts of the last one failed
    assert all(p.n == 2 for p in points)  # the two prompts are averaged
    assert 0 < sum(p.on_front for p in points) < len(points)
    assert report.metric_points(records, "flicker") == []
    assert report.missing_reasons(records, "flicker") == ["needs a decoded reference clip"]


def test_no_false_positive_on_identical_baseline(records):
    cmp = compare(records, [replace(r, run_id="other-" + r.run_id) for r in records])
    assert cmp.regressions == []
    assert cmp.matched == len(records) and cmp.only_current == cmp.only_baseline == 0


def test_detects_slowdown_metric_drop_and_new_failure(records):
    baseline = [r for r in records if r.status == "ok"]
    slow, worse, broken = baseline[3], baseline[7], baseline[11]
    current = [r for r in baseline if r not in (slow, worse, broken)]
    current += [
        _slower(slow, 2.0),
        replace(worse, metrics=worse.metrics | {"psnr": worse.metrics["psnr"] * 0.8, "lpips": worse.metrics["lpips"] * 1.01}),
        make_record("failed", **broken.params),
    ]
    cmp = compare(current, baseline, time_threshold=1.10, metric_threshold=0.05)
    found = [(r.kind, r.name, r.params) for r in cmp.regressions]
    assert found == [
        ("failure", "status", broken.params),
        ("time", "total", slow.params),
        ("metric", "psnr", worse.params),
    ]  # most severe first; lpips +1% is under the threshold
    time_reg = cmp.regressions[1]
    assert time_reg.current / time_reg.baseline > 1.2 and "worst stage base_denoise x2.00" in time_reg.detail
    assert "95% CI" in time_reg.detail and "3 vs 3 repeats" in time_reg.detail
    assert cmp.regressions[2].severity == pytest.approx(0.2)
    assert f"Times: {len(current) - 1} points compared in seconds (same machine), 0 normalised" in cmp.notes[0]


def test_time_regressions_need_significance(records):
    base = records[0]
    noisy = replace(base, repeat_times=[base.total_time * f for f in (0.5, 1.0, 1.6)])
    slower = _slower(noisy, 1.5)
    cmp = compare([slower], [noisy])
    assert cmp.regressions == [] and [r.params for r in cmp.inconclusive] == [base.params]  # 1.3x, repeats overlap
    single = [replace(r, repeat_times=[r.total_time]) for r in (base, _slower(base, 2.0))]
    cmp = compare([single[1]], [single[0]])
    assert cmp.regressions == [] and [r.params for r in cmp.inconclusive] == [base.params]  # shown, not claimed
    assert "no interval" in cmp.inconclusive[0].detail
    same = compare([base], [base])  # identical repeats: the interval is [1, 1], a slowdown is ruled out
    assert same.regressions == [] and same.inconclusive == []


def test_different_machines_compare_normalised_times(records):
    base = records[0]
    # twice the calibration and half the time on the new machine: the same work, no regression
    faster_box = replace(base, env=base.env | {"machine": machine("New CPU", 0.2)},
                         timings={k: v / 2 for k, v in base.timings.items()},
                         repeat_times=[t / 2 for t in base.repeat_times])  # fmt: skip
    cmp = compare([faster_box], [base])
    assert cmp.regressions == []
    assert cmp.notes[0].startswith("DIFFERENT MACHINES") and "cpu: Test CPU -> New CPU" in cmp.notes[0]
    # the same seconds on a machine twice as fast is twice the work: flagged, labelled normalised
    same_seconds = replace(base, env=base.env | {"machine": machine("New CPU", 0.2)})
    (reg,) = compare([same_seconds], [base]).regressions
    assert reg.severity == pytest.approx(1.0) and "calibration-normalised" in reg.detail


def test_times_without_machine_record_are_not_compared(records):
    base = records[0]
    old = replace(base, env={k: v for k, v in base.env.items() if k != "machine"})
    cmp = compare([_slower(base, 3.0)], [old])
    assert cmp.regressions == [] and cmp.inconclusive == []
    assert any("no machine record" in n for n in cmp.notes)


def test_report_files(tmp_path, records):
    files = report.write_report(records, tmp_path / "out", source="synthetic", baseline=records)
    md = files.markdown.read_text()
    assert files.markdown.name == "report.md" and files.html.name == "index.html"
    # One row per setting (every varying param has a column), n = the two prompts averaged.
    assert "| resolution | sampler | num_steps | guidance_scale | n |" in md
    assert "| 256p | unipc_cfg | 4 | 1 | 2 |" in md and "| 540p | dmd | 16 | 1 | 2 |" in md
    assert "No regressions beyond the thresholds." in md
    assert "RuntimeError: CUDA out of memory" in md
    assert "Skipped: no ok run has a value for flicker (needs a decoded reference clip)" in md
    names = {p.name for p in files.images}
    assert {"stage_time.png", "pareto_psnr.png", "pareto_av_confidence.png"} <= names
    for p in files.images:
        assert f"]({p.name})" in md
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"
    page = files.html.read_text()
    assert page.startswith("<!doctype html>") and "<td>540p</td><td>dmd</td><td>16</td>" in page
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temp files left behind


def test_report_without_metrics_or_ok_runs(tmp_path):
    failed = [make_record("failed", seed=i) for i in range(2)]
    files = report.write_report(failed, tmp_path / "out")
    md = files.markdown.read_text()
    assert "No ok runs with timings." in md and "No metrics were recorded." in md
    assert files.images == []


def test_cli_regression_report(tmp_path, capsys):
    base = grid(failures=0)
    slow = _slower(base[0], 2.0)
    fill_store(tmp_path / "base.sqlite", base)
    fill_store(tmp_path / "cur.sqlite", [slow, *base[1:]])
    assert report.main([str(tmp_path / "cur.sqlite"), "--baseline", str(tmp_path / "base.sqlite"), "--out", str(tmp_path / "rep")]) == 1
    assert "1 regressions" in capsys.readouterr().out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| time | total |" in md and "resolution=256p" in md


def test_cli_inconclusive_times_exit_3(tmp_path, capsys):
    base = grid(failures=0)
    single = [replace(r, repeat_times=[r.total_time]) for r in base]  # one repeat a side: no interval
    fill_store(tmp_path / "base.sqlite", single)
    fill_store(tmp_path / "cur.sqlite", single)
    args = [str(tmp_path / "cur.sqlite"), "--baseline", str(tmp_path / "base.sqlite"), "--out", str(tmp_path / "rep")]
    assert report.main(args) == 3
    points = len({json.dumps(r.params, sort_keys=True) for r in base})
    assert f"0 regressions against {tmp_path / 'base.sqlite'}, {points} inconclusive" in capsys.readouterr().out
    assert "Inconclusive total times" in (tmp_path / "rep" / "report.md").read_text()


def test_cli_missing_store(tmp_path):
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "absent.sqlite")])
    assert not (tmp_path / "absent.sqlite").exists()


def test_cli_reads_stores_read_only(tmp_path, capsys):
    fill_store(tmp_path / "cur.sqlite", grid(failures=0))
    fill_store(tmp_path / "base.sqlite", grid(failures=0))
    before = {name: digest(tmp_path / name) for name in ("cur.sqlite", "base.sqlite")}
    args = [str(tmp_path / "cur.sqlite"), "--baseline", str(tmp_path / "base.sqlite"), "--out", str(tmp_path / "rep")]
    assert report.main(args) == 0
    assert "0 regressions" in capsys.readouterr().out
    assert {name: digest(tmp_path / name) for name in before} == before


@pytest.mark.parametrize("kind", ["other app", "corrupt"])
def test_cli_refuses_a_file_that_is_not_a_store(tmp_path, capsys, kind):
    path = write_foreign_file(tmp_path / "app.db", kind)
    before = digest(path)
    with pytest.raises(SystemExit) as caught:
        report.main([str(path), "--out", str(tmp_path / "rep")])
    assert caught.value.code == 2 and str(path) in capsys.readouterr().err
    assert digest(path) == before and not (tmp_path / "rep").exists()


def test_cli_baseline_without_comparable_points_is_an_error(tmp_path, capsys):
    fill_store(tmp_path / "cur.sqlite", grid(failures=0))
    other_grid = [replace(r, run_id="b" + r.run_id, params=r.params | {"seed": 99}) for r in grid(failures=0)]
    fill_store(tmp_path / "base.sqlite", other_grid)
    fill_store(tmp_path / "empty.sqlite", [])
    for baseline in ("base.sqlite", "empty.sqlite"):
        with pytest.raises(SystemExit) as caught:
            report.main([str(tmp_path / "cur.sqlite"), "--baseline", str(tmp_path / baseline)])
        assert caught.value.code == 2
        assert f"the baseline {tmp_path / baseline} has no point with the same params" in capsys.readouterr().err


def _quant_by_steps():
    return [make_record(sampler="dmd", quant=q, num_steps=n, guidance_scale=None) for q in ("none", "int8") for n in (2, 4)]


def test_every_varying_setting_is_a_row():
    """quant=none,int8 x duration=1,2: four rows, none of them averaging two settings."""
    records = [make_record(quant=q, duration=d) for q in ("none", "int8") for d in (1.0, 2.0)]
    keys = setting_keys(records)
    assert keys == ("duration", "quant")
    rows = stage_table(records, keys)
    assert sorted(r.group for r in rows) == [(1.0, "int8"), (1.0, "none"), (2.0, "int8"), (2.0, "none")]
    assert all(r.n == 1 for r in rows)
    assert setting_keys([records[0]]) == ("resolution",)  # nothing varies: one row


def test_references_differ_in_the_fewest_settings():
    by = {(r.params["quant"], r.params["sampler.num_steps"]): r for r in _quant_by_steps()}
    refs = {k: choose_references(list(by.values()))[r.run_id] for k, r in by.items()}
    ref_of = {k: None if v is None else (v.params["quant"], v.params["sampler.num_steps"]) for k, v in refs.items()}
    assert ref_of == {("int8", 2): ("none", 2), ("int8", 4): ("none", 4), ("none", 2): ("none", 4), ("none", 4): None}
    other_prompt = make_record(sampler="dmd", quant="none", num_steps=8, guidance_scale=None, prompt_id="p1")
    assert choose_references([*by.values(), other_prompt])[by[("none", 4)].run_id] is None  # only same prompt/seed


def test_baseline_matches_identical_params_and_lists_the_rest(tmp_path):
    current = _quant_by_steps()
    baseline = [r for r in current if r.params["quant"] == "none"] + [make_record(sampler="dmd", quant="fp8", num_steps=2, guidance_scale=None)]
    cmp = compare(current, baseline)
    assert cmp.matched == 2 and cmp.only_current == 2 and cmp.only_baseline == 1
    assert {p["quant"] for p in cmp.unmatched_current} == {"int8"}
    md = report.write_report(current, tmp_path / "out", baseline=baseline).markdown.read_text()
    assert "| the baseline | num_steps=2 quant=fp8 |" in md
    assert "| these results | num_steps=4 quant=int8 |" in md
