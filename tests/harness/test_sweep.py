"""The sweep end to end on the tiny preset: grid, resume after a kill, recorded failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from magihuman.harness.report import load_records
from magihuman.harness.store import ResultsStore, config_hash

REPO = Path(__file__).resolve().parents[2]


def sweep_args(tmp: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "magihuman.harness.sweep",
        f"harness.store={tmp / 'results.sqlite'}", f"harness.artifacts={tmp / 'videos'}",
        f"harness.report={tmp / 'report'}", f"hydra.sweep.dir={tmp / 'hydra'}",
        f"model.cache_dir={tmp.parent / 'tiny-cache'}", f"prompts.media_dir={tmp.parent / 'media'}",
        "duration=1", "metrics=none", "mode=t2v", "sampler.progress=false", "harness.warmup=0", *overrides,
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
    assert {(r.params["sampler"], r.params["sampler.num_steps"]) for r in rows} == {
        ("dmd", 1), ("dmd", 2), ("unipc_cfg", 1), ("unipc_cfg", 2)}  # fmt: skip
    for r in rows:
        assert r.timings["base_denoise"] > 0 and r.timings["video_decode"] > 0
        assert len(r.step_times) == r.params["sampler.num_steps"]
        assert r.flops > 0 and r.tflops_per_s > 0
        assert r.env["torch"] and r.env["git_commit"] is not None
        assert r.env["machine"]["fingerprint"]["id"] and r.env["machine"]["calibration"]["tflops"] > 0
        assert Path(r.artifacts["video"]).exists()
    # One forward per step; CFG adds the uncond row (the negative prompt is the longer text).
    by = {(r.params["sampler"], r.params["sampler.num_steps"]): r.flops for r in rows}
    assert by[("dmd", 2)] == pytest.approx(2 * by[("dmd", 1)])
    assert by[("unipc_cfg", 2)] == pytest.approx(2 * by[("unipc_cfg", 1)])
    assert by[("unipc_cfg", 1)] > 2 * by[("dmd", 1)]


def test_reference_metrics_against_the_nearest_more_faithful_point(grid):
    rows = {(r.params["sampler"], r.params["sampler.num_steps"]): r for r in ResultsStore(grid / "results.sqlite").rows()}
    # Each run against the run one setting away with more DiT FLOPs, nearest first.
    expected = {("dmd", 1): ("dmd", 2), ("dmd", 2): ("unipc_cfg", 2), ("unipc_cfg", 1): ("unipc_cfg", 2)}
    for point, reference in expected.items():
        r = rows[point]
        assert r.artifacts["reference_run_id"] == rows[reference].run_id
        assert r.artifacts["reference_video"] == rows[reference].artifacts["video"]
        assert 0 < r.metrics["ssim"] <= 1 and r.metrics["psnr"] > 0
    top = rows[("unipc_cfg", 2)]  # the most faithful run is not scored against anything
    assert top.metrics["ssim"] is None and top.metric_notes["ssim"].startswith("this run is a reference")


def test_report_has_the_grid(grid):
    report = (grid / "report" / "report.md").read_text()
    assert "| sampler | num_steps | n |" in report and "| unipc_cfg | 2 | 1 |" in report and "| dmd | 1 | 1 |" in report
    assert "| dmd | 1 | 1 | sampler=dmd num_steps=2 |" not in report  # the reference column names only what differs
    assert "| dmd | 1 | 1 | num_steps=2 |" in report
    for png in (grid / "report").glob("*.png"):
        with Image.open(png) as image:
            image.verify()
    assert len(load_records(grid / "results.sqlite")) == 4


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Every point is recorded and reported, then the sweep exits non-zero with a summary."""
    done = run_sweep(tmp_path, "sampler=dmd", "sampler.num_steps=0,1")
    assert done.returncode == 1, done.stderr[-3000:]
    rows = {r.params["sampler.num_steps"]: r for r in ResultsStore(tmp_path / "results.sqlite").rows()}
    assert rows[0].status == "failed" and "num_steps must be >= 1" in rows[0].error
    assert rows[1].status == "ok"
    assert "[sweep] 2 points: 1 ok, 0 already done, 0 computed by another sweep, 1 failed" in done.stdout
    assert f"[sweep]   failed {rows[0].run_id}: " in done.stdout
    assert (tmp_path / "report" / "report.md").is_file()


def test_rescoring_fills_only_missing_values_and_keeps_scores_without_a_reference(grid, tmp_path, capsys):
    """A resumed sweep whose reference clip is gone keeps every stored score and says so."""
    import shutil

    from omegaconf import OmegaConf

    from magihuman.harness.sweep import score_references

    from magihuman.harness.report import choose_references

    shutil.copy(grid / "results.sqlite", tmp_path / "results.sqlite")
    store = ResultsStore(tmp_path / "results.sqlite")
    before = {r.run_id: dict(r.metrics) for r in store.rows()}
    unscored = min(store.rows(), key=lambda r: r.flops)
    reference = choose_references(store.rows())[unscored.run_id]
    unscored.metrics.pop("psnr")  # as if this point finished after the last scoring
    store.record(unscored, replace_ok=True)
    moved = tmp_path / "moved.npz"
    for r in store.rows():  # point every clip at this test's copies; the reference's is missing
        clip = tmp_path / Path(r.artifacts["clip"]).name
        if r.run_id != reference.run_id:
            shutil.copy(r.artifacts["clip"], clip)
        clip = moved if r.run_id == reference.run_id else clip
        store.record(replace(r, artifacts=r.artifacts | {"clip": str(clip)}), replace_ok=True)
    metrics_cfg = OmegaConf.create({"names": [], "reference": ["psnr", "ssim"]})
    assert score_references(store, ["psnr", "ssim"], metrics_cfg) == 0
    assert f"is missing: run {unscored.run_id} left unscored, stored scores kept" in capsys.readouterr().out
    after = {r.run_id: r.metrics for r in store.rows()}
    assert after[unscored.run_id] == {k: v for k, v in before[unscored.run_id].items() if k != "psnr"}
    assert all(after[k] == v for k, v in before.items() if k != unscored.run_id)
    # the reference clip back: only the missing value is filled, nothing else changes
    shutil.copy(reference.artifacts["clip"], moved)
    assert score_references(store, ["psnr", "ssim"], metrics_cfg) == 1
    after = {r.run_id: r.metrics for r in store.rows()}
    assert after[unscored.run_id]["psnr"] > 0 and after[unscored.run_id]["ssim"] == before[unscored.run_id]["ssim"]
    assert all(after[k] == v for k, v in before.items() if k != unscored.run_id)


def test_concurrent_sweeps_compute_a_shared_point_once(tmp_path):
    """Two sweeps over one store: the shared point is claimed by one; the other skips or finds it done."""
    def args(name: str) -> list[str]:  # one store, each sweep its own Hydra directory
        own = f"hydra.sweep.dir={tmp_path / name}"
        return [own if a.startswith("hydra.sweep.dir=") else a for a in sweep_args(tmp_path, "sampler=dmd",
                                                                                    "sampler.num_steps=1")]  # fmt: skip

    procs = [subprocess.Popen(args(name), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    stdout = "".join(out for out, _ in outs)
    assert stdout.count("] 1 points: 1 ok") == 1  # computed once
    assert stdout.count("(another sweep), skipping") + stdout.count("already done, skipping") == 1
    assert len(ResultsStore(tmp_path / "results.sqlite")) == 1


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
    assert sorted(r.params["sampler.num_steps"] for r in rows) == [1, 2, 3]  # none lost, none twice
    assert all(r.status == "ok" for r in rows)
    assert all({r.run_id: r.finished_at for r in rows}[k] == v for k, v in first.items())  # not re-run
    assert done.stdout.count("already done, skipping") == len(first)


def test_the_sweep_records_no_lip_sync_number_without_a_face(tmp_path):
    import numpy as np
    from omegaconf import OmegaConf

    from magihuman.eval.synthetic import talking_face_clip
    from magihuman.harness.sweep import Clip, clip_metrics

    clip = talking_face_clip(num_frames=50)
    noise = np.random.default_rng(0).integers(0, 256, size=clip.video.frames.shape, dtype=np.uint8)
    generated = Clip(noise, clip.audio.samples, clip.audio.sample_rate)
    values, notes = clip_metrics(generated, ["av_sync"], OmegaConf.create({}))
    assert values == {"av_offset_frames": None, "av_confidence": None}
    assert "av_sync needs a face: one was detected in 0% of the frames" in notes["av_offset_frames"]


# --- a point is exactly its settings --------------------------------------------------------


def test_quant_by_duration_gives_four_rows_and_int8_is_scored_against_none(tmp_path):
    done = run_sweep(tmp_path, "sampler=dmd", "sampler.num_steps=1", "quant=none,int8", "duration=1,2",
                     "metrics.reference=[psnr]")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r.params["quant"], r.params["duration"]): r for r in ResultsStore(tmp_path / "results.sqlite").rows()}
    assert sorted(rows) == [("int8", 1), ("int8", 2), ("none", 1), ("none", 2)]
    for d in (1, 2):
        assert rows[("int8", d)].artifacts["reference_run_id"] == rows[("none", d)].run_id
        assert rows[("int8", d)].metrics["psnr"] > 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| duration | quant | n |" in report
    for q, d in rows:
        assert f"| {d} | {q} | 1 |" in report
    assert "| 1 | int8 | 1 | quant=none |" in report


@pytest.fixture(scope="module")
def point(tmp_path_factory):
    """``point(*overrides)``: the params of the sweep config with ``overrides`` (one Hydra init)."""
    from hydra import compose, initialize_config_module

    from magihuman.harness.sweep import point_params

    media = tmp_path_factory.mktemp("media")
    with initialize_config_module("magihuman.configs", version_base="1.3"):
        yield lambda *overrides: point_params(compose("sweep", overrides=[f"prompts.media_dir={media}", *overrides]))


def test_a_point_is_its_settings_and_nothing_else(point):
    base = point()
    same = [
        "prompts.cases.1.prompt=an edited prompt the sweep does not use",  # another prompt of the suite
        "sampler.progress=false", "sr.sampler.progress=false", "harness.store=elsewhere.sqlite", "harness.report=elsewhere", "logger=wandb",
        "metrics=none", "harness.peak_tflops=100",
    ]  # fmt: skip
    for override in same:
        assert config_hash(point(override)) == config_hash(base), override
    differ = ["quant=int8", "duration=1", "offload=layer", "sampler.shift=3", "seed=1", "resolution=540p",
              "prompts.cases.0.prompt=an edited greeting", "prompt_id=news", "harness.repeats=3", "sampler.dit=base",
              "sr.sampler.num_steps=3", "parallel=cfg2"]  # fmt: skip
    for override in differ:
        assert config_hash(point(override)) != config_hash(base), override
    assert base["quant"] == "none" and base["sampler.num_steps"] == 8 and base["sampler.guidance_scale"] is None
    assert base["sampler.dit"] == "distill" and base["sr.sampler.num_steps"] == 5  # the SR group, kept at its source
    assert base["prompt"].startswith("A woman with short dark hair") and base["image"].endswith("face.png")
    assert not any(k.startswith(("model.offload", "model.quant", "model.device", "harness.store")) for k in base)
