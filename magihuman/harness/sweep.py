"""``magihuman-sweep``: run a grid of settings; time, score and record every point.

    magihuman-sweep                                   # the default tiny grid (configs/sweep.yaml)
    magihuman-sweep sampler=unipc_cfg sampler.num_steps=4,8,16 sampler.guidance_scale=1,3,5 \
        resolution=256p,540p

A point is exactly its settings (:func:`point_params`) and is keyed by their hash. A point
already recorded ok is skipped, so a killed sweep restarts where it stopped; a point that
fails (bad input, OOM, NaN) is recorded with its error and the sweep goes on. Each point is
generated ``harness.warmup`` times untimed, then ``harness.repeats`` times timed (each
stage's median is kept); its metrics are scored on the generated frames and waveform, kept
beside the mp4 as ``.npz``. When the sweep ends, metrics that need a reference clip are
scored (reference: ``report.choose_references``) and the report is written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from magihuman.cli.errors import cli_errors, exit_bad_input
from magihuman.parallel import launch_rank
from magihuman.pipeline import DiTCalls, GenerationRequest, GenerationResult, MagiHumanPipeline

from ..clip import FPS, SampleTokens
from ..stages import DENOISE_STAGES
from .devices import achieved_tflops, device_peak, mfu
from .flops import ForwardFlops, forward_flops
from .machine import machine_record
from .prompts import build_request, case_inputs
from .store import ResultsStore, RunRecord, StoreError, config_hash, format_error, utc_now

CONFIG_PATH = "pkg://magihuman.configs"  # configs/, installed with the package
# Config entries that change neither what a point generates nor how long it takes: where
# results go, how they are logged and scored, progress bars, and the prompt suite (the
# point's own prompt text and media are in its params instead).
NOT_SETTINGS = ("harness.store", "harness.artifacts", "harness.report", "harness.peak_tflops", "logger", "metrics",
                "prompts", "prompt", "mode.image", "mode.audio", "sampler.progress", "sr.sampler.progress")  # fmt: skip

_pipelines: dict[str, MagiHumanPipeline] = {}  # one per model config per process (joblib workers too)


def point_params(cfg: DictConfig) -> dict[str, Any]:
    """A point's identity: every resolved config value that can change its output or its
    timing, flat (``sampler.num_steps``), and nothing else (see ``NOT_SETTINGS``).

    A group's ``name`` / ``mode`` is keyed by the group (``sampler``, ``quant``); an entry
    that interpolates another (``model.offload: ${offload}``) is kept once, at its source;
    ``device: null`` is resolved as the pipeline resolves it; the guidance scale of a
    one-pass sampler is None (it is unused). The prompt is its text and media files.
    """
    params = {_short(k): v for k, v in _settings(cfg).items() if not _excluded(k)}
    params["device"] = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.sampler.get("cfg_passes", 1) == 1:
        params["sampler.guidance_scale"] = None
    try:
        prompt, image, audio = case_inputs(cfg)
    except ValueError as e:  # recorded as the point's failure by run_point
        prompt, image, audio = f"<invalid: {e}>", None, None
    params.update(prompt=prompt, image=None if image is None else str(image), audio=None if audio is None else str(audio))
    return params


def _settings(node: DictConfig, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in node:
        if prefix and OmegaConf.is_interpolation(node, key):
            continue  # a copy of another entry (model.offload: ${offload})
        value = node[key]
        if isinstance(value, DictConfig):
            out.update(_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    return out


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)


def _short(key: str) -> str:
    group, _, leaf = key.rpartition(".")
    return group if group and "." not in group and leaf in ("name", "mode") else key


def pipeline_for(model_cfg: DictConfig) -> MagiHumanPipeline:
    key = json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)
    if key not in _pipelines:
        _pipelines[key] = instantiate(model_cfg)
    return _pipelines[key]


def load_pipeline(model_cfg: DictConfig, request: GenerationRequest) -> tuple[float | None, MagiHumanPipeline]:
    """(load_s, pipeline): seconds to build the pipeline and load the DiT the request runs
    first, or None when an earlier point of this process did (other DiTs load in the warm-up)."""
    start = time.perf_counter()
    fresh = json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True) not in _pipelines
    pipeline = pipeline_for(model_cfg)
    pipeline.dit(request.sampler.dit)
    return (time.perf_counter() - start if fresh else None), pipeline


def case_transcript(cfg: DictConfig) -> str | None:
    """The words the prompt case asks to be spoken (``transcript``), for the ``wer`` metric."""
    return next((c.get("transcript") for c in cfg.prompts.cases if c["id"] == cfg.prompt_id), None)


def environment(pipeline: MagiHumanPipeline, dit: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent,
                                check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    device = pipeline.device
    return {
        "git_commit": commit,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": _weight_dtype(pipeline.dit(dit)),  # the base-stage DiT of the point
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


def stage_forward(calls: DiTCalls) -> ForwardFlops:
    """Analytic FLOPs (and tokens) of one DiT forward of a denoise stage (``calls.forwards`` ran)."""
    samples = [SampleTokens(calls.grid, calls.num_audio, n) for n in calls.num_text]
    return forward_flops(calls.config, samples, calls.receptive_field)


def dit_flops(result: GenerationResult) -> float:
    """Analytic FLOPs of every DiT forward the run made."""
    return sum(stage_forward(calls).total * calls.forwards for calls in result.dit_calls.values())


@dataclass(frozen=True)
class Clip:
    """A generated clip as the pipeline returned it (before x264): what metrics are scored on."""

    frames: np.ndarray  # [F, H, W, 3] uint8
    waveform: np.ndarray  # [channels, samples] float32
    sample_rate: int

    def save(self, path: Path) -> Path:
        """Uncompressed ``.npz``, written atomically (the reference of later points reads it)."""
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, frames=self.frames, waveform=self.waveform, sample_rate=self.sample_rate)
        return tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Clip:
        with np.load(path) as z:
            return cls(z["frames"], z["waveform"], int(z["sample_rate"]))


def clip_metrics(clip: Clip, names: list[str], metrics_cfg: DictConfig, reference: Clip | None = None,
                 prompt: str | None = None, transcript: str | None = None):  # fmt: skip
    """(metrics, notes): the store's flat metric names (``eval.metrics``) from one ``eval.score``
    of the generated frames and waveform (no decode, no x264 noise), so the face track is
    computed once for every lip-sync metric. Not strict: a metric that cannot apply (too short
    for av_sync, no weights) is recorded as None with its reason and does not sink the rest.
    ``metrics_cfg`` entries named as ``EvalConfig`` fields (model paths, ``face_detector``) set it."""
    from magihuman.eval.api import EvalConfig, score
    from magihuman.eval.io import Audio, Video
    from magihuman.eval.metrics import METRICS

    options = ({f.name for f in dataclasses.fields(EvalConfig)} - {"prompt", "transcript"}) & set(metrics_cfg)
    config = EvalConfig(**{k: metrics_cfg[k] for k in options}, prompt=prompt, transcript=transcript)
    video = Video(clip.frames, float(FPS))
    audio = Audio.from_array(clip.waveform, clip.sample_rate)
    ref = None if reference is None else Video(reference.frames, float(FPS))
    entries = score(video, reference=ref, audio=audio, metrics=names, config=config, strict=False)["metrics"]
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name, entry in entries.items():
        for key, value in METRICS[name].flatten(entry).items():
            values[key] = value
            if value is None:
                notes[key] = entry.get("reason", "not available")
    return values, notes


def run_point(cfg: DictConfig) -> RunRecord | None:
    """Generate, time, score and record one point; skip it if already recorded ok, or while
    another sweep over the same store computes it (the point is claimed in the store).

    A multi-rank point (torchrun, or a multi-task submitit job) runs on every rank; rank 0
    claims, scores and records it, the other ranks only generate beside it.
    """
    params = point_params(cfg)
    run_id = config_hash(params)
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
        record = _run_claimed(cfg, store, run_id, params)
    finally:
        store.release(run_id)
    _write_outcome(run_id, record.status, _first_line(record.error))
    return record


@dataclass(frozen=True)
class _Runs:
    """A point's pipeline, its load and warm-up seconds, and its timed runs."""

    pipeline: MagiHumanPipeline
    load_s: float | None
    warmup_s: float | None
    runs: list[GenerationResult]
    request: GenerationRequest


def _generate(cfg: DictConfig, video: Path) -> _Runs:
    """Load (timed apart), warm up at the point's shapes (untimed), then the timed runs."""
    request = build_request(cfg, output=video)  # bad input fails here, before a model loads
    load_s, pipeline = load_pipeline(cfg.model, request)
    start = time.perf_counter()
    for _ in range(cfg.harness.warmup):  # first-call costs (allocator, codec, compile) land here
        warm = pipeline.generate(request, output=video.with_name(f".{video.name}.warmup.mp4"))
        if warm.path is not None:
            warm.path.unlink()
    warmup_s = time.perf_counter() - start if cfg.harness.warmup else None
    runs = [pipeline.generate(request, output=video) for _ in range(cfg.harness.repeats)]
    return _Runs(pipeline, load_s, warmup_s, runs, request)


def _run_claimed(cfg: DictConfig, store: ResultsStore, run_id: str, params: dict[str, Any]) -> RunRecord:
    config, started = OmegaConf.to_container(cfg, resolve=True), utc_now()
    logger = instantiate(cfg.logger)
    video = Path(cfg.harness.artifacts) / f"{run_id}.mp4"
    try:
        done = _generate(cfg, video)
        pipeline, runs, request, load_s, warmup_s = done.pipeline, done.runs, done.request, done.load_s, done.warmup_s
        result = sorted(runs, key=lambda r: sum(r.timings.values()))[len(runs) // 2]  # the median run
        timings = {s: statistics.median(r.timings.get(s, 0.0) for r in runs) for s in result.timings}
        timings["total"] = sum(timings.values())
        denoise_s = sum(timings.get(s, 0.0) for s in DENOISE_STAGES)
        flops = dit_flops(result)
        peak = device_peak(str(pipeline.device), cfg.harness.peak_tflops)
        clip = Clip(result.frames, result.waveform, result.sample_rate)
        clip_path = clip.save(video.with_suffix(".npz"))
        metrics, notes = clip_metrics(clip, list(cfg.metrics.names), cfg.metrics, prompt=request.prompt,
                                      transcript=case_transcript(cfg))  # fmt: skip
        record = RunRecord(
            run_id=run_id, status="ok", started_at=started, finished_at=utc_now(), params=params,
            timings=timings, step_times=[t for s in DENOISE_STAGES for t in result.step_times.get(s, [])],
            repeat_times=[sum(r.timings.values()) for r in runs],
            peak_memory_bytes=max(r.peak_memory_bytes for r in runs), flops=flops,
            tflops_per_s=achieved_tflops(flops, denoise_s) if denoise_s else None,
            mfu=mfu(flops, denoise_s, peak) if denoise_s else None, load_s=load_s, warmup_s=warmup_s,
            metrics=metrics, metric_notes=notes, env=environment(pipeline, request.sampler.dit), config=config,
            artifacts={"video": str(video.resolve()), "clip": str(clip_path.resolve())},
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a failed point is a result: record it, go on
        record = RunRecord(run_id=run_id, status="failed", started_at=started, finished_at=utc_now(),
                           params=params, error=format_error(e), config=config)  # fmt: skip
    store.record(record)
    logger.log(record, video if record.status == "ok" else None)
    print(f"[sweep] {run_id} {record.status} {_overrides()}" + (f": {_first_line(record.error)}" if record.error else ""))
    return record


def _overrides() -> str:
    """This job's command-line overrides of settings (what sets it apart from the other points)."""
    if not HydraConfig.initialized():
        return ""
    return " ".join(o for o in HydraConfig.get().overrides.task if not _excluded(o.split("=", 1)[0].lstrip("+~")))


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


def score_references(store: ResultsStore, names: list[str], metrics_cfg: DictConfig) -> int:
    """Score reference metrics of every ok row against its reference (``report.choose_references``:
    the more faithful run that differs from it in the fewest settings); returns how many rows
    were updated.

    Only values never scored are filled: a stored score (or a stored "not available") is
    never replaced, and a row whose clip or reference clip is gone keeps its scores, with a
    message saying so.
    """
    from magihuman.eval.metrics import output_keys

    from .report import choose_references

    keys = output_keys(names)
    rows = [r for r in store.rows("ok") if r.artifacts.get("clip")]
    references = choose_references(rows)
    updated = 0
    for r in rows:
        missing = [k for k in keys if k not in r.metrics]  # never scored
        if not missing:
            continue
        reference = references[r.run_id]
        if reference is None:
            values = {k: None for k in keys}
            notes = {k: "this run is a reference (no more faithful run with the same prompt, seed, size and length)"
                     for k in values}  # fmt: skip
        else:
            gone = [p for p in (r.artifacts["clip"], reference.artifacts["clip"]) if not Path(p).is_file()]
            if gone:
                print(f"[sweep] clip {gone[0]} is missing: run {r.run_id} left unscored, stored scores kept")
                continue
            values, notes = clip_metrics(Clip.load(Path(r.artifacts["clip"])), names, metrics_cfg,
                                         Clip.load(Path(reference.artifacts["clip"])))  # fmt: skip
            for k, v in values.items():
                if v == float("inf"):  # PSNR of an identical clip: store no number, say why
                    values[k], notes[k] = None, "identical to the reference"
            r.artifacts.update(reference_video=reference.artifacts["video"], reference_run_id=reference.run_id)
        r.metrics.update({k: values[k] for k in missing})
        r.metric_notes.update({k: notes[k] for k in missing if k in notes})
        store.record(r, replace_ok=True)
        updated += 1
    return updated


class FinishSweep(Callback):
    """Hydra callback: after the last point, score reference metrics and write the report."""

    def __init__(self, store: str, report: str, reference_metrics: list[str], metrics: dict):
        self.store, self.report = store, report
        self.reference_metrics, self.metrics = list(reference_metrics), OmegaConf.create(metrics)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a results store that is not ours before any point is launched."""
        try:
            ResultsStore(self.store)
        except StoreError as error:
            exit_bad_input("magihuman-sweep", error)

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


@cli_errors("magihuman-sweep")
@hydra.main(config_path=CONFIG_PATH, config_name="sweep", version_base="1.3")
@cli_errors("magihuman-sweep")
def main(cfg: DictConfig) -> None:
    run_point(cfg)


if __name__ == "__main__":
    main()
