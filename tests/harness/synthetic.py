"""Synthetic ``RunRecord``s for the store, report and notebook tests: a plausible cost and
quality model over a small sweep grid, deterministic for a seed."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any

from magihuman.harness.machine import Calibration, Fingerprint
from magihuman.harness.store import ResultsStore, RunRecord, config_hash

STEP_COST_S = {"256p": 0.05, "540p": 0.2, "720p": 0.35, "1080p": 0.8}


def machine(cpu: str = "Test CPU", tflops: float = 0.1) -> dict[str, Any]:
    """An ``env["machine"]`` record as the sweep writes it."""
    fp = Fingerprint(cpu, ("avx2", "fma"), 2, 1, None, None, "2.14.1", None)
    calibration = Calibration(tflops, 1024, "float32", "cpu", "time.perf_counter", 9)
    return {"fingerprint": fp.to_json(), "calibration": calibration.to_json()}


def make_record(status: str = "ok", **params: Any) -> RunRecord:
    """One record of a point (defaults fill the params not given; ``num_steps`` and
    ``guidance_scale`` stand for the sampler's); id = hash of the params."""
    aliases = {"num_steps": "sampler.num_steps", "guidance_scale": "sampler.guidance_scale"}
    p = {
        "sampler": "unipc_cfg",
        "sampler.num_steps": 8,
        "sampler.guidance_scale": 5.0,
        "resolution": "256p",
        "mode": "t2v",
        "duration": 2.0,
        "quant": "none",
        "prompt_id": "p0",
        "seed": 0,
    } | {aliases.get(k, k): v for k, v in params.items()}
    rec = _simulate(p, random.Random(config_hash(p)))
    if status == "failed":
        rec = replace(
            rec,
            status="failed",
            error="RuntimeError: CUDA out of memory\nTraceback (most recent call last):\n  ...",
            timings={},
            step_times=[],
            repeat_times=[],
            metrics={},
        )
    return rec


def _simulate(p: dict[str, Any], rng: random.Random) -> RunRecord:
    passes = 2 if p["sampler"] == "unipc_cfg" and p["sampler.guidance_scale"] > 1 else 1
    step = STEP_COST_S[p["resolution"]] * passes
    step_times = [step * rng.uniform(0.95, 1.05) for _ in range(p["sampler.num_steps"])]
    timings = {
        "text_encode": 0.3,
        "audio_encode": 0.1 if p["mode"] == "a2v" else 0.0,
        "base_denoise": sum(step_times),
        "sr_denoise": 0.0 if p["resolution"] == "256p" else 2.0,
        "video_decode": 0.5,
        "audio_decode": 0.2,
        "mux": 0.05,
    }
    timings["total"] = sum(timings.values()) + 0.1
    quality = 1 - 2 ** (-p["sampler.num_steps"] / 8)
    metrics = {
        "psnr": 20 + 10 * quality + rng.uniform(-0.2, 0.2),
        "lpips": 0.4 - 0.25 * quality,
        "av_offset_frames": float(rng.choice([-1, 0, 0, 1])),
        "av_confidence": 2 + 5 * quality,
        "flicker": None,
    }
    return RunRecord(
        run_id=config_hash(p),
        status="ok",
        started_at="2026-01-01T00:00:00.000+00:00",
        finished_at=f"2026-01-01T00:{rng.randrange(60):02d}:00.000+00:00",
        params=p,
        timings=timings,
        step_times=step_times,
        peak_memory_bytes=int(2**30 * 10 * passes),
        flops=1e15 * p["sampler.num_steps"],
        tflops_per_s=400.0,
        mfu=0.4,
        metrics=metrics,
        metric_notes={"flicker": "needs a decoded reference clip"},
        env={"git_commit": "abc123", "torch": "2.14.1", "device": "cpu", "dtype": "bfloat16", "hostname": "test",
             "machine": machine()},
        repeat_times=[timings["total"] * f for f in (0.98, 1.0, 1.02)],
        config={"params": p, "model": {"preset": "tiny"}},
        artifacts={"video": f"outputs/{config_hash(p)}.mp4"},
    )


def grid(failures: int = 1) -> list[RunRecord]:
    """A small sweep: 2 resolutions x 2 samplers x 3 step counts x 2 guidance x 2 prompts,
    the last ``failures`` points failed."""
    points = product(("256p", "540p"), ("unipc_cfg", "dmd"), (4, 8, 16), (1.0, 5.0), ("p0", "p1"))
    records = [
        make_record(resolution=r, sampler=s, num_steps=n, guidance_scale=g, prompt_id=pid)
        for r, s, n, g, pid in points
    ]
    return records[: len(records) - failures] + [make_record("failed", **r.params) for r in records[-failures:]]


def fill_store(path: str | Path, records: list[RunRecord] | None = None) -> ResultsStore:
    store = ResultsStore(path)
    for rec in grid() if records is None else records:
        store.record(rec)
    return store


def digest(path: Path) -> str:
    """The file's bytes as a hash: readers must leave it byte-identical."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_foreign_file(path: Path, kind: str) -> Path:
    """A file that is not a results store: ``empty``, ``other app`` (another application's SQLite) or ``corrupt``."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "other app":
        with closing(sqlite3.connect(path)) as con:
            con.execute("CREATE TABLE notes (id INTEGER, text TEXT)")
            con.commit()
    elif kind == "corrupt":
        path.write_bytes(b"not a database " * 500)
    else:
        raise ValueError(f"kind must be empty, other app or corrupt, got {kind!r}")
    return path
