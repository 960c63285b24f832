"""Speed table: the paper's rows as requests timed through :meth:`MagiHumanPipeline.generate`.

Each experiment (``configs/experiment/``: ``paper_256p``, ``paper_540p``, ``paper_1080p``,
``paper_base_cfg``) is composed onto ``speed.yaml`` (generate.yaml's groups) with Hydra's
compose API exactly as ``magihuman-generate +experiment=NAME`` composes it, becomes the same
request (:func:`magihuman.harness.prompts.build_request`) and runs through the same
``pipeline.generate``, on random weights made on the device (``model: random``, the full-size
release by default). Nothing is timed here: stage and per-step seconds (CUDA events on a GPU),
peak memory and the DiT calls (for the analytic FLOPs, :func:`magihuman.harness.sweep.dit_flops`)
are what ``generate`` records, read over ``repeats`` runs after ``warmup`` untimed ones. The
pipeline is built once per model config and reused across experiments (each DiT is built on
first use). The JSON (with the machine record) is rewritten atomically after every experiment,
so a run cut off keeps what it finished.

    python -m magihuman.harness.speed                                   # GPU, full size, eager
    python -m magihuman.harness.speed runtime=fast runtime.compile=layers out=outputs/speed_fast.json
    python -m magihuman.harness.speed experiments=[paper_256p,paper_base_cfg] quant=fp8
    python -m magihuman.harness.speed model.arch=tiny device=cpu duration=0.2 warmup=0 repeats=1
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import hydra
import torch
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from magihuman.api import RequestError
from magihuman.harness.devices import DevicePeak, achieved_tflops, device_peak, mfu
from magihuman.harness.machine import machine_record
from magihuman.harness.prompts import build_request
from magihuman.harness.store import write_atomic
from magihuman.harness.sweep import stage_forward
from magihuman.pipeline import GenerationRequest, GenerationResult, MagiHumanPipeline

CONFIG_PATH = "pkg://magihuman.configs"


# ---------------------------------------------------------------------------------------
# The paper's numbers: SPEC section 5, a 5 s clip on one H100, full-graph compile, turbo decoder.


@dataclass(frozen=True)
class PaperRow:
    base: float
    sr: float | None
    decode: float
    total: float


PAPER_H100 = {
    "paper_256p": PaperRow(base=1.6, sr=None, decode=0.4, total=2.0),
    "paper_540p": PaperRow(base=1.6, sr=5.1, decode=1.3, total=8.0),
    "paper_1080p": PaperRow(base=1.6, sr=31.0, decode=5.8, total=38.4),
}
PAPER_STAGES = {"base": "base_denoise", "sr": "sr_denoise", "decode": "video_decode"}  # paper column -> generate's


# ---------------------------------------------------------------------------------------
# What one experiment measured.


@dataclass
class StageResult:
    seconds: float  # median over the timed runs
    seconds_all: list[float]
    steps: int | None = None  # DiT stages: sampler steps per run, their median seconds
    step_seconds: float | None = None
    forwards: int | None = None  # DiT forwards per run, tokens of each (all rows packed together)
    tokens_per_forward: int | None = None
    flops: float | None = None  # analytic, per run
    tflops: float | None = None
    mfu: float | None = None


@dataclass
class ExperimentResult:
    name: str
    request: dict  # what ran: resolution, duration, sampler, SR sampler, decoder, seed, prompt
    stages: dict[str, StageResult]  # generate's stages, in its order
    seconds: float  # median generate time (its stages summed)
    seconds_all: list[float]
    peak_memory_bytes: int  # the largest of the timed runs
    paper_h100_seconds: dict | None


class SpeedTableError(ValueError):
    """A configuration that cannot give a table (exit 2, one line): found before a model is built."""


def time_request(pipeline: MagiHumanPipeline, request: GenerationRequest, warmup: int, repeats: int):
    """``warmup`` untimed generations (first-call costs, compiles, graph capture), then the timed ones."""
    for _ in range(warmup):
        pipeline.generate(request)
    return [pipeline.generate(request) for _ in range(repeats)]


def summarize(name: str, request: GenerationRequest, decoder: str, pipeline: MagiHumanPipeline,
              runs: list[GenerationResult], peak: DevicePeak | None) -> ExperimentResult:  # fmt: skip
    first = runs[0]
    stages = {}
    for stage in first.timings:
        times = [r.timings[stage] for r in runs]
        result = StageResult(statistics.median(times), times)
        if stage in first.dit_calls:
            calls, forward = first.dit_calls[stage], stage_forward(first.dit_calls[stage])
            steps = [t for r in runs for t in r.step_times[stage]]
            result.steps, result.step_seconds = len(first.step_times[stage]), statistics.median(steps)
            result.forwards, result.tokens_per_forward = calls.forwards, forward.tokens
            result.flops = forward.total * calls.forwards
            result.tflops = achieved_tflops(result.flops, result.seconds)
            result.mfu = mfu(result.flops, result.seconds, peak)
        stages[stage] = result
    totals = [sum(r.timings.values()) for r in runs]
    ran = {
        "resolution": request.resolution,
        "duration": request.duration,
        "seed": request.seed,
        "prompt": request.prompt,
        "sampler": asdict(request.sampler),
        "sr_sampler": asdict(pipeline.sr.sampler) if "sr_denoise" in first.dit_calls else None,
        "decoder": decoder,
    }
    paper = PAPER_H100.get(name)
    return ExperimentResult(name, ran, stages, statistics.median(totals), totals,
                            max(r.peak_memory_bytes for r in runs), asdict(paper) if paper else None)  # fmt: skip


# ---------------------------------------------------------------------------------------
# The table.


def experiment_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """``speed.yaml`` + ``experiment/NAME`` + the command line: what ``magihuman-generate
    +experiment=NAME`` composes from generate.yaml, on the speed table's model."""
    return compose(config_name="speed", overrides=[*overrides, f"+experiment={name}"])


def check(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse what cannot give a table, naming the option (before any model is built)."""
    if any(o.lstrip("+~").startswith("experiment=") for o in overrides):
        raise SpeedTableError("name experiments with experiments=[NAME,...], not experiment=NAME")
    if not cfg.experiments:
        raise SpeedTableError("experiments is empty; expected names from configs/experiment/, e.g. [paper_256p]")
    known = GlobalHydra.instance().config_loader().get_group_options("experiment")
    if unknown := [name for name in cfg.experiments if name not in known]:
        raise SpeedTableError(f"unknown experiment {unknown[0]!r}; expected names from configs/experiment/: {known}")
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise SpeedTableError(f"repeats must be >= 1 and warmup >= 0, got repeats={cfg.repeats}, warmup={cfg.warmup}")
    if (cfg.runtime.compile != "none" or cfg.runtime.cuda_graphs) and cfg.warmup < 1:
        raise SpeedTableError("runtime.compile / runtime.cuda_graphs need warmup >= 1 "
                              "(compiles and graph captures would be timed)")  # fmt: skip


def requests(cfg: DictConfig, overrides: Sequence[str]) -> list[tuple[str, DictConfig, GenerationRequest]]:
    """Every experiment's composed config and checked request, in order (all before any model is built)."""
    out = []
    for name in cfg.experiments:
        try:
            exp = experiment_config(name, overrides)
            out.append((name, exp, build_request(exp)))
        except (HydraException, RequestError) as error:
            raise SpeedTableError(f"experiment {name}: {error}") from error
    return out


def run(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """Every experiment of ``cfg.experiments`` through one pipeline per model config; the report.

    Configuration errors (an unknown experiment, a bad request, a runtime the device cannot run)
    raise :class:`SpeedTableError` before a generation runs.
    """
    check(cfg, overrides)
    planned = requests(cfg, overrides)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(cfg.out)
    results: list[ExperimentResult] = []
    header, peak = None, None
    pipeline, model_key = None, None
    for name, exp, request in planned:
        key = json.dumps(OmegaConf.to_container(exp.model, resolve=True), sort_keys=True)
        if key != model_key:
            pipeline = model_key = None
            free_memory()
            pipeline, model_key = build_pipeline(exp.model), key
        if header is None:
            peak = device_peak(str(pipeline.device), cfg.peak_tflops)
            header = report_header(cfg, pipeline, peak, created)
        if pipeline.runtime.compile != "none":
            # Each experiment compiles afresh, as a new process would: shapes x layer variants of several
            # experiments would exceed dynamo's recompile limit and silently fall back to eager.
            torch._dynamo.reset()
        print(f"[speed] {name}: {request.resolution}, {request.sampler.name} x{request.sampler.num_steps}, "
              f"{request.duration:g} s ...", file=sys.stderr, flush=True)  # fmt: skip
        runs = time_request(pipeline, request, cfg.warmup, cfg.repeats)
        results.append(summarize(name, request, exp.decoder, pipeline, runs, peak))
        write_report(out, header, results, complete=False)
    report = write_report(out, header, results, complete=True)
    print_table(report)
    print(f"\nwrote {out}")
    return report


def build_pipeline(model_cfg: DictConfig) -> MagiHumanPipeline:
    try:
        return instantiate(model_cfg)
    except HydraException as error:  # instantiate wraps the pipeline's own ValueError
        raise SpeedTableError(str(error.__cause__ or error)) from error


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def report_header(cfg: DictConfig, pipeline: MagiHumanPipeline, peak: DevicePeak | None, created: str) -> dict:
    device = pipeline.device
    cuda = device.type == "cuda"
    return {
        "created": created,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "peak_bf16_dense_tflops": peak.bf16_dense_tflops if peak else None,
        "memory": "cuda max_memory_allocated" if cuda else "process peak RSS (VmHWM)",
        "torch": torch.__version__,
        "magihuman": machine_record(device),  # fingerprint + calibration matmul: which machine this was
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "runtime": asdict(pipeline.runtime) | {"label": pipeline.runtime.label},
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
    }


def write_report(out: Path, header: dict, results: list[ExperimentResult], complete: bool) -> dict:
    report = {**header, "complete": complete, "experiments": [asdict(r) for r in results]}
    report["paper_h100_seconds"] = {name: asdict(row) for name, row in PAPER_H100.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------------------
# Printing and publishing (docs/performance.md).


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def paper_columns(experiment: dict) -> dict[str, float | None]:
    """An experiment of the JSON as the paper adds it up: base, SR, decode, and their sum as the total."""
    cols = {col: experiment["stages"][stage]["seconds"] if stage in experiment["stages"] else None
            for col, stage in PAPER_STAGES.items()}  # fmt: skip
    cols["total"] = sum(v for v in cols.values() if v is not None)
    return cols


def print_table(report: dict) -> None:
    peak = report["peak_bf16_dense_tflops"]
    print(f"\nSpeed table: {report['model'].get('arch', '?')} architecture, random weights, {report['device']} "
          f"({f'{peak:g} TFLOP/s bf16 dense' if peak else 'no peak: MFU not computed'}), runtime "
          f"{report['runtime']['label']}, median of {report['repeats']} after {report['warmup']} warm-up")  # fmt: skip
    header = (f"{'experiment':<16}{'stage':<14}{'steps':>6}{'tokens/fwd':>11}{'FLOP':>10}{'s':>9}{'step s':>9}"
              f"{'TFLOP/s':>9}{'MFU':>7}")  # fmt: skip
    print(header + "\n" + "-" * len(header))
    for e in report["experiments"]:
        for stage, s in e["stages"].items():
            print(f"{e['name']:<16}{stage:<14}{fmt(s['steps'], 'd'):>6}{fmt(s['tokens_per_forward'], 'd'):>11}"
                  f"{fmt(s['flops'], '.2e'):>10}{s['seconds']:>9.3f}{fmt(s['step_seconds'], '.3f'):>9}"
                  f"{fmt(s['tflops'], '.3g'):>9}{fmt(s['mfu'], '.1%'):>7}")  # fmt: skip
    print("\nPer clip, ours / paper (paper: 5 s clip, one H100, full-graph compile, turbo decoder)")
    print(f"{'experiment':<16}{'res':<9}" + "".join(f"{c:>14}" for c in ("base", "SR", "decode", "total"))
          + f"{'generate s':>12}{'peak':>11}")  # fmt: skip
    for e in report["experiments"]:
        ours, paper = paper_columns(e), e["paper_h100_seconds"] or {}
        cells = [f"{fmt(ours[k], '.2f')} / {fmt(paper.get(k), '.1f')}" for k in ("base", "sr", "decode", "total")]
        print(f"{e['name']:<16}{e['request']['resolution']:<9}" + "".join(f"{c:>14}" for c in cells)
              + f"{e['seconds']:>12.2f}{e['peak_memory_bytes'] / 2**30:>7.2f} GiB")  # fmt: skip


TABLE_START, TABLE_END = "<!-- device-table:start -->", "<!-- device-table:end -->"


def publish(report_paths: list[str], results_path: str, doc_path: str) -> None:
    """Merge the speed-table reports that exist into ``results_path`` and rewrite the marked
    device table of ``doc_path`` from them (runs side by side, the paper and the compute floor)."""
    reports = [json.loads(Path(p).read_text()) for p in report_paths if Path(p).is_file()]
    if not reports:
        return
    results = Path(results_path)
    results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(results, json.dumps({"runs": reports}, indent=2) + "\n")
    doc = Path(doc_path)
    text = doc.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{doc}: no {TABLE_START} ... {TABLE_END} block to fill")
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    write_atomic(doc, head + TABLE_START + "\n" + device_table(reports, results_path) + TABLE_END + tail)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def device_table(reports: list[dict], source: str) -> str:
    """Markdown: per experiment and stage the seconds of every run beside the paper, the compute
    floor (FLOPs at the card's dense bf16 peak), TFLOP/s and MFU; then per-clip totals."""
    first = reports[0]
    peak = first["peak_bf16_dense_tflops"]
    labels = [r["runtime"]["label"] + ("" if r.get("complete") else " (cut off)") for r in reports]
    seconds = sorted({e["request"]["duration"] for r in reports for e in r["experiments"]})
    durations = "/".join(f"{d:g}" for d in seconds)
    lines = [f"Measured {first['created']} on {first['device']} (torch {first['torch']}, {first['model'].get('arch')} "
             f"architecture, random weights, {durations} s clip, `pipeline.generate`); JSON: `{source}`.", "",
             _row(["experiment", "stage", "paper s", "floor s", *(f"{label} s | TFLOP/s | MFU" for label in labels)]),
             "|---" * (4 + 3 * len(reports)) + "|"]  # fmt: skip
    paper_of_stage = {stage: col for col, stage in PAPER_STAGES.items()}
    for e in first["experiments"]:
        paper = e["paper_h100_seconds"] or {}
        runs = [next((x for x in r["experiments"] if x["name"] == e["name"]), None) for r in reports]
        for stage, s in e["stages"].items():
            floor = s["flops"] / (peak * 1e12) if s["flops"] and peak else None
            cells = [f"{fmt(r['seconds'], '.2f')} | {fmt(r['tflops'], '.0f')} | {fmt(r['mfu'], '.0%')}"
                     if (r := x["stages"].get(stage) if x else None) else "- | - | -" for x in runs]  # fmt: skip
            lines.append(_row([e["name"], stage, fmt(paper.get(paper_of_stage.get(stage)), ".1f"), fmt(floor, ".2f"),
                               *cells]))  # fmt: skip
    lines += ["", _row(["clip", "paper total s", *(f"{label}: base+SR+decode s | generate s" for label in labels)]),
              "|---" * (2 + 2 * len(reports)) + "|"]  # fmt: skip
    for e in first["experiments"]:
        runs = [next((x for x in r["experiments"] if x["name"] == e["name"]), None) for r in reports]
        cells = [f"{fmt(paper_columns(x)['total'], '.2f')} | {fmt(x['seconds'], '.2f')}" if x else "- | -"
                 for x in runs]  # fmt: skip
        lines.append(_row([e["name"], fmt((e["paper_h100_seconds"] or {}).get("total"), ".1f"), *cells]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Command line.


@hydra.main(config_path=CONFIG_PATH, config_name="speed", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, list(HydraConfig.get().overrides.task))
    except SpeedTableError as error:  # bad input: one line, exit 2
        print(f"magihuman.harness.speed: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
