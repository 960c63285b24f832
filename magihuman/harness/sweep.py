"""``magihuman-sweep``: run a grid of settings; time, score and record every point.

    magihuman-sweep                                   # the default tiny grid (configs/sweep.yaml)
    magihuman-sweep sampler=unipc_cfg sampler.num_steps=4,8,16 sampler.guidance_scale=1,3,5 \
        resolution=256p,540p

Each point is keyed by a hash of its resolved config. A point already recorded ok is
skipped, so a killed sweep restarts where it stopped; a point that fails (bad input, OOM,
NaN) is recorded with its error and the sweep goes on. When the sweep ends, metrics that
need a reference clip are scored (reference = the same prompt, seed, resolution and mode at
the most expensive setting) and the report is written.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from magihuman.parallel import launch_rank
from magihuman.pipeline import GenerationResult, MagiHumanPipeline

from ..clip import SampleTokens
from .devices import achieved_tflops, device_peak, mfu
from .flops import forward_flops
from .machine import machine_record
from .prompts import build_request
from .store import ResultsStore, RunRecord, config_hash, format_error, utc_now

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
# What defines a point: changing where results go or how they are logged re-runs nothing.
POINT_KEYS = ("model", "sampler", "resolution", "mode", "prompts", "prompt_id", "prompt", "duration", "seed",
              "decoder", "device", "offload", "quant", "runtime", "parallel")  # fmt: skip
DENOISE_STAGES = ("base_denoise", "sr_denoise")

_pipelines: dict[str, MagiHumanPipeline] = {}  # one per model config per process (joblib workers too)


def point_config(cfg: DictConfig) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = {k: resolved.get(k) for k in POINT_KEYS}
    config["harness"] = {k: resolved["harness"][k] for k in ("warmup", "repeats")}
    return config


def point_params(cfg: DictConfig) -> dict[str, Any]:
    return {
        "sampler": cfg.sampler.name,
        "num_steps": int(cfg.sampler.num_steps),
        "guidance_scale": float(cfg.sampler.guidance_scale) if cfg.sampler.cfg_passes == 2 else None,
        "resolution": cfg.resolution.name,
        "mode": cfg.mode.name,
        "prompt_id": cfg.prompt_id,
        "seed": int(cfg.seed),
        "decoder": cfg.decoder,
        "offload": cfg.offload.mode,
        "quant": cfg.quant.mode,
        "runtime": instantiate(cfg.runtime).label,
        "parallel": instantiate(cfg.parallel).label,  # e.g. cp4+cfg+fsdp8; the full setup is in the config
    }


def pipeline_for(model_cfg: DictConfig) -> MagiHumanPipeline:
    key = json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)
    if key not in _pipelines:
        _pipelines[key] = instantiate(model_cfg)
    return _pipelines[key]


def environment(pipeline: MagiHumanPipeline) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=CONFIG_DIR,
                                check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    device = pipeline.device
    return {
        "git_commit": commit,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": _weight_dtype(pipeline.dit(pipeline.base_dit)),
        "hostname": platform.node(),
        "machine": _machine(str(device)),
    }


@functools.cache
def _machine(device: str) -> dict[str, Any]:
    """Fingerprint and calibration of ``device``, measured once per process: the report compares
    times across stores in seconds only between equal fingerprints (``machine.py``)."""
    return machine_record(device)


def _weight_dtype(model: torch.nn.Module) -> str:
    """The dtype of the DiT's largest stored tensor (its linears: bf16 as released, int8 / fp8 quantized)."""
    largest = max((*model.parameters(), *model.buffers()), key=lambda t: t.numel())
    return str(largest.dtype).removeprefix("torch.")


def dit_flops(result: GenerationResult) -> float:
    """Analytic FLOPs of every DiT forward the run made."""
    total = 0.0
    for calls in result.dit_calls.values():
        samples = [SampleTokens(calls.grid, calls.num_audio, n) for n in calls.num_text]
        total += forward_flops(calls.config, samples, calls.receptive_field).total * calls.forwards
    return total


def clip_metrics(video: Path, names: list[str], metrics_cfg: DictConfig, reference: Path | None = None):
    """(metrics, notes): the store's flat metric names from ``eval.score``, one metric at a time
    so that one that cannot apply (too short for av_sync, no weights) does not sink the rest."""
    from eval.api import EvalConfig, score
    from eval.errors import EvalInputError

    config = EvalConfig(syncnet_weights=metrics_cfg.get("syncnet_weights"), lpips_alexnet=metrics_cfg.get("lpips_alexnet"))
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in names:
        try:
            entry = score(video, reference=reference, metrics=[name], config=config)["metrics"][name]
        except EvalInputError as e:
            entry = {"available": False, "reason": str(e)}
        for key, value in _flatten_metric(name, entry).items():
            values[key] = value
            if value is None:
                notes[key] = entry.get("reason", "not available")
    return values, notes


def _flatten_metric(name: str, entry: dict) -> dict[str, float | None]:
    ok = entry.get("available", False)
    pick = {
        "av_sync": {"av_offset_frames": "offset_frames", "av_confidence": "confidence"},
        "syncnet": {"lse_d": "lse_d", "lse_c": "lse_c", "syncnet_offset_frames": "offset_frames"},
        "temporal_consistency": {"temporal_warp_error": "warp_error"},
        "flicker": {"flicker": "mean_abs_luma_change"},
        "audio": {"audio_duration_diff_s": "duration_diff_s", "audio_clipping_ratio": "clipping_ratio",
                  "audio_silence_ratio": "silence_ratio"},
        "psnr": {"psnr": "mean"},
        "ssim": {"ssim": "mean"},
        "lpips": {"lpips": "mean"},
    }.get(name, {name: "value"})  # fmt: skip
    return {out: (float(entry[key]) if ok and entry.get(key) is not None else None) for out, key in pick.items()}


def run_point(cfg: DictConfig) -> RunRecord | None:
    """Generate, time, score and record one point; skip it if already recorded ok, or while
    another sweep over the same store computes it (the point is claimed in the store).

    A multi-rank point (torchrun, or a multi-task submitit job) runs on every rank; rank 0
    claims, scores and records it, the other ranks only generate beside it.
    """
    config = point_config(cfg)
    run_id = config_hash(config)
    store = ResultsStore(cfg.harness.store)
    if launch_rank(instantiate(cfg.parallel)) != 0:
        if not store.done(run_id):
            _generate(cfg, Path(cfg.harness.artifacts) / f"{run_id}.mp4")
        return None
    claim = store.claim(run_id)
    if claim.status == "done":
        print(f"[sweep] {run_id} already done, skipping")
        _write_outcome(run_id, "done")
        return store.get(run_id)
    if claim.status == "busy":
        print(f"[sweep] {run_id} is being computed by {claim.holder} (another sweep), skipping")
        _write_outcome(run_id, "busy", f"computed by {claim.holder}")
        return None
    try:
        record = _run_claimed(cfg, store, run_id, config)
    finally:
        store.release(run_id)
    _write_outcome(run_id, record.status, _first_line(record.error))
    return record


def _generate(cfg: DictConfig, video: Path) -> tuple[MagiHumanPipeline, list[GenerationResult]]:
    """The point's pipeline and its timed runs (after the warm-up runs)."""
    request = build_request(cfg, output=video)  # bad input fails here, before a model loads
    pipeline = pipeline_for(cfg.model)
    for _ in range(cfg.harness.warmup):
        pipeline.generate(request)
    return pipeline, [pipeline.generate(request, output=video) for _ in range(cfg.harness.repeats)]


def _run_claimed(cfg: DictConfig, store: ResultsStore, run_id: str, config: dict[str, Any]) -> RunRecord:
    params, started = point_params(cfg), utc_now()
    logger = instantiate(cfg.logger)
    video = Path(cfg.harness.artifacts) / f"{run_id}.mp4"
    try:
        pipeline, runs = _generate(cfg, video)
        result = sorted(runs, key=lambda r: sum(r.timings.values()))[len(runs) // 2]  # the median run
        timings = dict(result.timings, total=sum(result.timings.values()))
        denoise_s = sum(timings.get(s, 0.0) for s in DENOISE_STAGES)
        flops = dit_flops(result)
        peak = device_peak(str(pipeline.device), cfg.harness.peak_tflops)
        metrics, notes = clip_metrics(video, list(cfg.metrics.names), cfg.metrics)
        record = RunRecord(
            run_id=run_id, status="ok", started_at=started, finished_at=utc_now(), params=params,
            timings=timings, step_times=[t for s in DENOISE_STAGES for t in result.step_times.get(s, [])],
            repeat_times=[sum(r.timings.values()) for r in runs],
            peak_memory_bytes=result.peak_memory_bytes, flops=flops,
            tflops_per_s=achieved_tflops(flops, denoise_s) if denoise_s else None,
            mfu=mfu(flops, denoise_s, peak) if denoise_s else None,
            metrics=metrics, metric_notes=notes, env=environment(pipeline), config=config,
            artifacts={"video": str(video.resolve())},
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a failed point is a result: record it, go on
        record = RunRecord(run_id=run_id, status="failed", started_at=started, finished_at=utc_now(),
                           params=params, error=format_error(e), config=config)  # fmt: skip
    store.record(record)
    logger.log(record, video if record.status == "ok" else None)
    print(f"[sweep] {run_id} {record.status} {params}" + (f": {_first_line(record.error)}" if record.error else ""))
    return record


OUTCOME_FILE = "point.json"


def _write_outcome(run_id: str, status: str, message: str = "") -> None:
    """The point's outcome in its Hydra job directory, where ``FinishSweep`` reads the sweep's
    summary (job directories are shared by every launcher: local, joblib, SLURM)."""
    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir) / OUTCOME_FILE
        path.write_text(json.dumps({"run_id": run_id, "status": status, "message": message}))


def _first_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""


def sweep_outcomes(sweep_dir: Path) -> list[dict[str, str]]:
    """One outcome per job of the sweep; a job that left none (killed) counts as failed."""
    jobs = sorted(d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()) if sweep_dir.is_dir() else []
    outcomes = []
    for job in jobs:
        path = job / OUTCOME_FILE
        if path.is_file():
            outcomes.append(json.loads(path.read_text()))
        else:
            outcomes.append({"run_id": job.name, "status": "failed", "message": "the job left no outcome (killed?)"})
    return outcomes


def summary_line(outcomes: list[dict[str, str]]) -> str:
    """``[sweep] N points: a ok, b already done, c computed by another sweep, d failed`` and the failures."""
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("ok", "done", "busy", "failed")}
    line = (f"[sweep] {len(outcomes)} points: {counts['ok']} ok, {counts['done']} already done, "
            f"{counts['busy']} computed by another sweep, {counts['failed']} failed")  # fmt: skip
    failed = [f"{o['run_id']}: {o['message']}" for o in outcomes if o["status"] == "failed"]
    return line + "".join(f"\n[sweep]   failed {f}" for f in failed)


def _reference_keys(names: list[str]) -> list[str]:
    return [key for name in names for key in _flatten_metric(name, {"available": False})]


def score_references(store: ResultsStore, names: list[str], metrics_cfg: DictConfig) -> int:
    """Score reference metrics of every ok row against the most expensive run of its
    (prompt, seed, resolution, mode) group; returns how many rows were updated.

    Only values never scored are filled: a stored score (or a stored "not available") is
    never replaced, and a group whose reference clip is gone keeps its scores, with a
    message saying so.
    """
    keys = _reference_keys(names)
    rows = [r for r in store.rows("ok") if r.artifacts.get("video")]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in rows:
        groups.setdefault(tuple(r.params[k] for k in ("prompt_id", "seed", "resolution", "mode")), []).append(r)
    updated = 0
    for members in groups.values():
        reference = max(members, key=lambda r: r.flops)
        reference_video = Path(reference.artifacts["video"])
        todo = [r for r in members if any(k not in r.metrics for k in keys)]  # never scored
        if todo and not reference_video.is_file():
            print(f"[sweep] reference clip {reference_video} (run {reference.run_id}) is missing: "
                  f"{len(todo)} row(s) left unscored, stored scores kept")  # fmt: skip
            continue
        for r in todo:
            if r.run_id == reference.run_id:
                values = {k: None for k in keys}
                notes = {k: "this run is the reference" for k in values}
            elif not Path(r.artifacts["video"]).is_file():
                print(f"[sweep] clip {r.artifacts['video']} (run {r.run_id}) is missing: left unscored")
                continue
            else:
                values, notes = clip_metrics(Path(r.artifacts["video"]), names, metrics_cfg, reference_video)
                for k, v in values.items():
                    if v == float("inf"):  # PSNR of an identical clip: store no number, say why
                        values[k], notes[k] = None, "identical to the reference"
            missing = [k for k in keys if k not in r.metrics]
            r.metrics.update({k: values[k] for k in missing})
            r.metric_notes.update({k: notes[k] for k in missing if k in notes})
            r.artifacts["reference_video"] = str(reference_video)
            store.record(r, replace_ok=True)
            updated += 1
    return updated


class FinishSweep(Callback):
    """Hydra callback: after the last point, score reference metrics and write the report."""

    def __init__(self, store: str, report: str, reference_metrics: list[str], metrics: dict):
        self.store, self.report = store, report
        self.reference_metrics, self.metrics = list(reference_metrics), OmegaConf.create(metrics)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .report import load_records, write_report

        outcomes = sweep_outcomes(Path(config.hydra.sweep.dir))
        if Path(self.store).exists():
            store = ResultsStore(self.store)
            if self.reference_metrics:
                score_references(store, self.reference_metrics, self.metrics)
            files = write_report(load_records(self.store), self.report, source=self.store)
            print(f"[sweep] report: {files.markdown}")
        print(summary_line(outcomes))
        if any(o["status"] == "failed" for o in outcomes):
            raise SystemExit(1)  # every point is recorded and reported; the exit status says some failed


@hydra.main(config_path=CONFIG_DIR, config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_point(cfg)


if __name__ == "__main__":
    main()
