"""The sweep end to end on the tiny preset: grid, resume after a kill, recorded failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from magihuman.harness.report import load_records
from magihuman.harness.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]


def sweep_args(tmp: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "magihuman.harness.sweep",
        f"harness.store={tmp / 'results.sqlite'}", f"harness.artifacts={tmp / 'videos'}",
        f"harness.report={tmp / 'report'}", f"hydra.sweep.dir={tmp / 'hydra'}",
        f"model.cache_dir={tmp.parent / 'tiny-cache'}", f"prompts.media_dir={tmp.parent / 'media'}",
        "duration=1", "metrics=none", "mode=t2v", "sampler.progress=false", *overrides,
    ]  # fmt: skip


def run_sweep(tmp: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_args(tmp, *overrides), cwd=REPO, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2 x 2 grid (sampler x steps) with reference metrics, then the report."""
    tmp = tmp_path_factory.mktemp("grid")
    done = run_sweep(tmp, "sampler=dmd,unipc_cfg", "sampler.num_steps=1,2",
                     "metrics.reference=[psnr,ssim]")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


def test_grid_records_every_point_with_timings_and_flops(grid):
    rows = ResultsStore(grid / "results.sqlite").rows()
    assert len(rows) == 4 and all(r.status == "ok" for r in rows)
    assert {(r.params["sampler"], r.params["num_steps"]) for r in rows} == {
        ("dmd", 1), ("dmd", 2), ("unipc_cfg", 1), ("unipc_cfg", 2)}  # fmt: skip
    for r in rows:
        assert r.timings["base_denoise"] > 0 and r.timings["video_decode"] > 0
        assert len(r.step_times) == r.params["num_steps"]
        assert r.flops > 0 and r.tflops_per_s > 0
        assert r.env["torch"] and r.env["git_commit"] is not None
        assert Path(r.artifacts["video"]).exists()
    # One forward per step; CFG adds the uncond row (the negative prompt is the longer text).
    by = {(r.params["sampler"], r.params["num_steps"]): r.flops for r in rows}
    assert by[("dmd", 2)] == pytest.approx(2 * by[("dmd", 1)])
    assert by[("unipc_cfg", 2)] == pytest.approx(2 * by[("unipc_cfg", 1)])
    assert by[("unipc_cfg", 1)] > 2 * by[("dmd", 1)]


def test_reference_metrics_against_the_most_expensive_point(grid):
    rows = ResultsStore(grid / "results.sqlite").rows()
    reference = max(rows, key=lambda r: r.flops)
    assert (reference.params["sampler"], reference.params["num_steps"]) == ("unipc_cfg", 2)
    for r in rows:
        assert r.artifacts["reference_video"] == reference.artifacts["video"]
        if r.run_id != reference.run_id:
            assert 0 < r.metrics["ssim"] <= 1 and r.metrics["psnr"] > 0
        else:  # a run is not scored against itself
            assert r.metrics["ssim"] is None and r.metric_notes["ssim"] == "this run is the reference"


def test_report_has_the_grid(grid):
    report = (grid / "report" / "report.md").read_text()
    assert "256p/unipc_cfg/2" in report and "256p/dmd/1" in report
    for png in (grid / "report").glob("*.png"):
        with Image.open(png) as image:
            image.verify()
    assert len(load_records(grid / "results.sqlite")) == 4


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    done = run_sweep(tmp_path, "sampler=dmd", "sampler.num_steps=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r.params["num_steps"]: r for r in ResultsStore(tmp_path / "results.sqlite").rows()}
    assert rows[0].status == "failed" and "num_steps must be >= 1" in rows[0].error
    assert rows[1].status == "ok"


def test_killed_sweep_resumes_without_losing_or_repeating_points(tmp_path):
    args = sweep_args(tmp_path, "sampler=dmd", "sampler.num_steps=1,2,3")
    store = ResultsStore(tmp_path / "results.sqlite")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and (not (tmp_path / "results.sqlite").exists() or len(store) < 1):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep: at least one point done, not all
    finally:
        proc.wait()
    first = {r.run_id: r.finished_at for r in store.rows()}
    assert 1 <= len(first) < 3
    done = run_sweep(tmp_path, "sampler=dmd", "sampler.num_steps=1,2,3")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = store.rows()
    assert sorted(r.params["num_steps"] for r in rows) == [1, 2, 3]  # none lost, none twice
    assert all(r.status == "ok" for r in rows)
    assert all({r.run_id: r.finished_at for r in rows}[k] == v for k, v in first.items())  # not re-run
    assert done.stdout.count("already done, skipping") == len(first)
