"""Speed table: time the pipeline's DiT stages and the VAE decode of a clip beside the paper's H100 rows.

Nothing here is a second implementation: each DiT stage runs the pipeline's own velocity
(:func:`magihuman.pipeline.dit_velocity`: packed once per stage, layout built once), its
samplers, its runtime options (:mod:`magihuman.model.runtime`: compile, CUDA graphs,
attention backend) and its weight precision (:func:`magihuman.model.quant.quantize`),
timed by :mod:`magihuman.timing`. The architectures are built on the meta device and
materialised with random weights directly on the target device (no host copy), fed the
real token counts of a ``--duration`` second clip, and timed stage by stage:

- ``base_distill``: 256p, 8 DMD steps, 1 pass (the paper's "base" column)
- ``base_cfg``: 256p, 32 UniPC steps, cond + uncond batched into one forward
- ``sr``: 540p and 1080p, 5 UniPC steps, 1 pass (1080p: local attention, v1 coords)
- ``decode``: the release's default video decoder, our turbo decoder
  (:class:`magihuman.components.turbo_vae.TurboVAED`, sliding windows), at each resolution:
  the decoder the paper's decode column times
- ``decode_wan``: the full Wan2.2 TI2V-5B VAE decoder (diffusers ``AutoencoderKLWan``, the
  pipeline's ``decoder=wan``) at each resolution, for comparison
- ``audio_decode``: the Stable Audio Open Oobleck VAE (diffusers ``AutoencoderOobleck``)
  decoding the clip's audio latents (the same for every resolution, so run once)

For each stage it reports the median time over ``--repeats`` runs (after ``--warmup``
untimed ones), the analytic FLOPs (``magihuman.harness.flops``), achieved TFLOP/s, MFU
against the device's bf16 dense peak and peak memory (``torch.cuda.max_memory_allocated``
on GPU, the process's peak RSS on CPU); the JSON is rewritten after every stage, so a run
cut off still reports what it finished. ``--arch tiny`` runs the same code on the tiny
preset and a 2.9M-parameter VAE, so CI can prove the script works on a CPU.

    python scripts/speed_table.py --out outputs/speed_table.json               # GPU, full size, eager
    python scripts/speed_table.py --compile model --cuda-graphs --out ...      # GPU, the best runtime
    python scripts/speed_table.py --arch tiny --device cpu --duration 0.2 \\
        --text-tokens 16 --resolutions 256p 540p --warmup 0 --repeats 1      # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

from magihuman.clip import SampleTokens, clip_shape, latent_size, resolution, resolution_tokens
from magihuman.harness.devices import DevicePeak, achieved_tflops, device_peak, mfu
from magihuman.harness.flops import forward_flops
from magihuman.harness.machine import machine_record
from magihuman.harness.store import write_atomic
from magihuman.model import DiT, DiTConfig
from magihuman.model.dit import init_weights
from magihuman.model.presets import FULL, FULL_SR_540P, FULL_SR_1080P, TINY, TINY_SR_1080P
from magihuman.model.quant import QUANT_MODES, quantize
from magihuman.model.runtime import ATTN_BACKENDS, COMPILE_MODES, RuntimeConfig, apply_runtime, check_runtime
from magihuman.sampling import cfg_denoise, flow_sigmas, sample_dmd, sample_unipc
from magihuman.sampling.velocity import dit_velocity
from magihuman.timing import PeakMemory, StageTimer

# ---------------------------------------------------------------------------------------
# What is measured, and the paper's numbers (SPEC section 5: 5 s clip, one H100,
# full-graph compile, turbo decoder).


@dataclass(frozen=True)
class PaperRow:
    base: float
    sr: float | None
    decode: float
    total: float


PAPER_H100 = {
    "256p": PaperRow(base=1.6, sr=None, decode=0.4, total=2.0),
    "540p": PaperRow(base=1.6, sr=5.1, decode=1.3, total=8.0),
    "1080p": PaperRow(base=1.6, sr=31.0, decode=5.8, total=38.4),
}
PAPER_PATHS = {"256p": "256p", "540p": "540p_sr", "1080p": "1080p"}  # paper row -> magihuman.clip resolution

def wan22_vae_config() -> dict:
    """The release's Wan2.2 VAE shape (imported late: the components package pulls in the media
    stack, which the timing path must not need)."""
    from magihuman.components.video_vae import WAN22_VAE_CONFIG

    return WAN22_VAE_CONFIG


def tiny_vae_config() -> dict:
    """SPEC section 6: the same shape at 2.9M parameters, as the tiny release builds it (imported
    late: the components package pulls in the media stack, which the timing path must not need)."""
    from magihuman.components.tiny import TINY_VIDEO_VAE_CONFIG

    return TINY_VIDEO_VAE_CONFIG


def release_turbo_config():
    """The release's turbo decoder (``TurboV3-Wan22-TinyShallow_7_7.json``, 107M parameters)."""
    from magihuman.components.turbo_vae import TurboVAEDConfig

    return TurboVAEDConfig()


def release_oobleck_config() -> dict:
    """stable-audio-open-1.0's Oobleck VAE: diffusers' ``AutoencoderOobleck`` defaults are that model."""
    return {}


def tiny_oobleck_config() -> dict:
    """The tiny release's Oobleck VAE (imported late, as the other tiny configs)."""
    from magihuman.components.tiny import TINY_AUDIO_VAE_CONFIG

    return TINY_AUDIO_VAE_CONFIG


def tiny_turbo_config():
    """The tiny release's turbo decoder (0.4M parameters)."""
    from magihuman.components.tiny import TINY_TURBO_VAE_CONFIG

    return TINY_TURBO_VAE_CONFIG


@dataclass(frozen=True)
class Arch:
    base: DiTConfig
    sr: dict[str, DiTConfig]
    vae: Callable[[], dict]  # the Wan decoder's diffusers config, looked up when a decode_wan stage runs
    turbo: Callable[[], object]  # the turbo decoder's TurboVAEDConfig, looked up when a decode stage runs
    audio_vae: Callable[[], dict]  # the Oobleck VAE's diffusers config, looked up when audio_decode runs


ARCHS = {
    "full": Arch(base=FULL, sr={"540p": FULL_SR_540P, "1080p": FULL_SR_1080P}, vae=wan22_vae_config,
                 turbo=release_turbo_config, audio_vae=release_oobleck_config),
    "tiny": Arch(base=TINY, sr={"540p": TINY, "1080p": TINY_SR_1080P}, vae=tiny_vae_config,
                 turbo=tiny_turbo_config, audio_vae=tiny_oobleck_config),
}
STAGE_KINDS = ("base_distill", "base_cfg", "sr", "decode", "decode_wan", "audio_decode")
DECODE_KINDS = ("decode", "decode_wan", "audio_decode")


@dataclass(frozen=True)
class Stage:
    kind: str  # one of STAGE_KINDS
    resolution: str
    steps: int = 1
    passes: int = 1  # samples per forward (2 = CFG cond + uncond batched)


@dataclass
class StageResult:
    kind: str
    resolution: str
    steps: int
    passes: int
    tokens_per_forward: int | None  # DiT stages only
    flops: float | None  # DiT stages only (no FLOP model for the VAE)
    seconds: float  # median over repeats
    seconds_all: list[float]
    tflops: float | None
    mfu: float | None
    peak_memory_bytes: int
    paper_seconds: float | None


def plan_stages(kinds: list[str], resolutions: list[str]) -> list[Stage]:
    """Stages in run order; stages sharing a DiT config are adjacent so each model is built once."""
    stages = []
    if "base_distill" in kinds:
        stages.append(Stage("base_distill", "256p", steps=8))
    if "base_cfg" in kinds:
        stages.append(Stage("base_cfg", "256p", steps=32, passes=2))
    if "sr" in kinds:
        stages += [Stage("sr", r, steps=5) for r in resolutions if r != "256p"]
    if "decode" in kinds:
        stages += [Stage("decode", r) for r in resolutions]
    if "audio_decode" in kinds:
        stages.append(Stage("audio_decode", resolutions[0]))  # audio latents do not depend on the resolution
    if "decode_wan" in kinds:  # last: the slowest decoder, and not the release's
        stages += [Stage("decode_wan", r) for r in resolutions]
    return stages


def paper_seconds(stage: Stage) -> float | None:
    row = PAPER_H100[stage.resolution]
    return {"base_distill": row.base, "sr": row.sr, "decode": row.decode}.get(stage.kind)


# ---------------------------------------------------------------------------------------
# Building models on the device.


def build_dit(config: DiTConfig, device: torch.device, seed: int) -> DiT:
    """The DiT with random weights materialised directly on ``device``: built on the meta
    device, allocated there (``to_empty``), then filled by :func:`init_weights` on it; no
    full-size copy ever exists on the host."""
    with torch.device("meta"):
        model = DiT(config)
    model.to_empty(device=device)
    return init_weights(model, seed).eval().requires_grad_(False)


def build_turbo(config, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The turbo decoder with PyTorch's default random init, built directly on ``device``."""
    from magihuman.components.turbo_vae import TurboVAED

    with torch.device(device):
        decoder = TurboVAED(config)
    return decoder.to(dtype).eval().requires_grad_(False)


def build_vae(config: dict, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        vae = AutoencoderKLWan(**config)  # PyTorch's default random init, on the device
    return nn.Module.to(vae, dtype).eval().requires_grad_(False)  # nn.Module.to: diffusers' override warns needlessly


@dataclass(frozen=True)
class Options:
    """What the DiT stages run under: the pipeline's own runtime config and weight precision."""

    runtime: RuntimeConfig
    quant: str = "none"


def prepare_dit(model: DiT, options: Options) -> DiT:
    """Exactly what ``MagiHumanPipeline.dit`` does to a loaded DiT: quantize, then apply the runtime."""
    return apply_runtime(quantize(model, options.quant), options.runtime)


def dit_stage_runner(model: DiT, stage: Stage, tokens: SampleTokens, options: Options, seed: int) -> Callable[[], None]:
    """A closure running the stage's whole sampler loop once from fixed random latents."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    t, hp, wp = tokens.grid
    video = torch.randn(1, model.config.video_in_channels // 4, t, 2 * hp, 2 * wp, generator=g, device=device)
    audio = torch.randn(1, tokens.num_audio, model.config.audio_in_channels, generator=g, device=device)
    cpu = torch.Generator().manual_seed(seed)
    texts = [torch.randn(tokens.num_text, model.config.text_in_channels, generator=cpu) for _ in range(stage.passes)]
    coords_style = "v1" if stage.kind == "sr" else "v2"
    velocity = dit_velocity(model, [t.to(device) for t in texts], coords_style, device=device,
                            options=options.runtime.forward_options())  # the pipeline's
    sigmas = flow_sigmas(stage.steps)

    if stage.kind == "base_distill":
        return lambda: sample_dmd(velocity, video, audio, sigmas, generator=g, progress=False)
    if stage.kind == "base_cfg":
        denoise = cfg_denoise(velocity, scale=5.0, audio_scale=5.0)
        return lambda: sample_unipc(denoise, video, audio, sigmas, progress=False)
    return lambda: sample_unipc(velocity, video, audio, sigmas, progress=False)


# ---------------------------------------------------------------------------------------
# Timing and memory.


def time_runs(run: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per timed run after ``warmup`` untimed ones, by the pipeline's stage timer
    (CUDA events on GPU, perf_counter on CPU)."""
    timer = StageTimer(cuda=device.type == "cuda")
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        for _ in range(repeats):
            with timer.step("run"):
                run()
    return timer.steps()["run"]


# ---------------------------------------------------------------------------------------
# The table.


def run_table(args: argparse.Namespace, device: torch.device, peak: DevicePeak | None,
              on_stage: Callable[[list[StageResult]], object] = lambda results: None) -> list[StageResult]:  # fmt: skip
    arch = ARCHS[args.arch]
    options = Options(args.runtime, args.quant)
    memory = PeakMemory(device)
    results: list[StageResult] = []
    model, model_config = None, None
    for stage in plan_stages(args.stages, args.resolutions):
        print(f"[speed_table] {stage.kind} {stage.resolution} ...", file=sys.stderr, flush=True)
        if stage.kind in DECODE_KINDS:
            model = model_config = None  # free the DiT before the VAE
            free_memory(device)
            run, tokens, flops = decode_runner(arch, stage, args, device), None, None
        else:
            config = arch.base if stage.kind.startswith("base") else arch.sr[stage.resolution]
            if config != model_config:
                model = None
                free_memory(device)
                model = prepare_dit(build_dit(config, device, args.seed), options)
                model_config = config
            if options.runtime.compile != "none":
                # Fresh compile caches per stage: layer variants x token counts x CFG routing would
                # otherwise exceed dynamo's recompile limit and silently fall back to eager.
                torch._dynamo.reset()
            sample = resolution_tokens(PAPER_PATHS[stage.resolution], args.duration, args.text_tokens)
            with torch.inference_mode():
                run = dit_stage_runner(model, stage, sample, options, args.seed)
            fwd = forward_flops(config, [sample] * stage.passes)
            tokens, flops = fwd.tokens, fwd.total * stage.steps
        memory.reset()  # the peak then includes the resident weights and inputs
        times = time_runs(run, device, args.warmup, args.repeats)
        seconds = statistics.median(times)
        results.append(
            StageResult(
                kind=stage.kind,
                resolution=stage.resolution,
                steps=stage.steps,
                passes=stage.passes,
                tokens_per_forward=tokens,
                flops=flops,
                seconds=seconds,
                seconds_all=times,
                tflops=achieved_tflops(flops, seconds) if flops else None,
                mfu=mfu(flops, seconds, peak) if flops else None,
                peak_memory_bytes=memory.read(),
                paper_seconds=paper_seconds(stage),
            )
        )
        del run
        on_stage(results)
    return results


def decode_runner(arch: Arch, stage: Stage, args: argparse.Namespace, device: torch.device) -> Callable[[], Tensor]:
    default = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, args.vae_dtype) if args.vae_dtype else default
    g = torch.Generator(device=device).manual_seed(args.seed)
    if stage.kind == "audio_decode":
        from diffusers import AutoencoderOobleck

        with torch.device(device), warnings.catch_warnings():  # diffusers builds it with the deprecated weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            audio_vae = AutoencoderOobleck(**arch.audio_vae()).eval().requires_grad_(False)
        shape = (1, audio_vae.config.decoder_input_channels, clip_shape(args.duration).num_audio)
        audio_latent = torch.randn(shape, generator=g, device=device)
        return lambda: audio_vae.decode(audio_latent).sample  # fp32, as the pipeline runs it
    h, w = latent_size(*reversed(resolution(PAPER_PATHS[stage.resolution]).dit_size))

    def latents(channels: int) -> Tensor:
        shape = (1, channels, clip_shape(args.duration).latent_frames, h, w)
        return torch.randn(shape, generator=g, device=device, dtype=dtype)

    if stage.kind == "decode":
        turbo = build_turbo(arch.turbo(), device, dtype)
        latent = latents(turbo.config.latent_channels)
        return lambda: turbo.decode(latent)
    vae = build_vae(arch.vae(), device, dtype)
    latent = latents(arch.vae()["z_dim"])
    return lambda: vae.decode(latent).sample


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def clip_totals(results: list[StageResult], resolutions: list[str]) -> dict[str, dict[str, float | None]]:
    """Per resolution: base (distilled) + SR + decode, as the paper adds them up; None if a part is missing."""
    by = {(r.kind, r.resolution): r.seconds for r in results}
    totals = {}
    for res in resolutions:
        base = by.get(("base_distill", "256p"))
        sr = by.get(("sr", res)) if res != "256p" else 0.0
        decode = by.get(("decode", res))
        parts = (base, sr, decode)
        totals[res] = {
            "base": base,
            "sr": sr if res != "256p" else None,
            "decode": decode,
            "total": sum(parts) if all(p is not None for p in parts) else None,
        }
    return totals


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(results: list[StageResult], totals: dict, device_label: str, peak: DevicePeak | None, args) -> None:
    peak_label = f"{peak.name}, {peak.bf16_dense_tflops:g} TFLOP/s bf16 dense" if peak else "no peak: MFU not computed"
    print(f"\nStages ({args.arch} architecture, {args.duration:g} s clip, device {device_label}; {peak_label})")
    header = (
        f"{'stage':<13}{'res':<7}{'tokens/fwd':>11}{'steps':>8}{'FLOP':>10}{'ours s':>9}{'paper s':>9}"
        f"{'TFLOP/s':>9}{'MFU':>7}{'peak mem':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.kind:<13}{r.resolution:<7}{fmt(r.tokens_per_forward, 'd'):>11}"
            f"{(f'{r.steps}x{r.passes}' if r.tokens_per_forward else '-'):>8}{fmt(r.flops, '.2e'):>10}"
            f"{r.seconds:>9.3f}{fmt(r.paper_seconds, '.1f'):>9}{fmt(r.tflops, '.3g'):>9}"
            f"{fmt(r.mfu, '.1%'):>7}{r.peak_memory_bytes / 2**30:>8.2f} GiB"
        )
    print("\nPer clip, ours / paper (paper: 5 s clip, one H100, full-graph compile, turbo decoder)")
    print(f"{'res':<7}{'base':>16}{'SR':>16}{'decode':>16}{'total':>16}")
    for res, t in totals.items():
        paper = PAPER_H100[res]
        pairs = (("base", paper.base), ("sr", paper.sr), ("decode", paper.decode), ("total", paper.total))
        cells = [f"{fmt(t[k], '.2f')} / {fmt(p, '.1f')}" for k, p in pairs]
        print(f"{res:<7}" + "".join(f"{c:>16}" for c in cells))


# ---------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, torch.device]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="full", help="full: the 15B release; tiny: CPU runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--duration", type=float, default=5.0, help="clip length in seconds (5 s -> 32 latent frames)")
    parser.add_argument("--text-tokens", type=int, default=300, help="text tokens per sample (cond and uncond)")
    parser.add_argument("--resolutions", nargs="+", choices=list(PAPER_H100), default=list(PAPER_H100))
    parser.add_argument("--stages", nargs="+", choices=STAGE_KINDS, default=list(STAGE_KINDS))
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per stage")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none", help="runtime.compile of the pipeline")
    parser.add_argument("--attn-backend", choices=ATTN_BACKENDS, default="sdpa", help="runtime.attn_backend")
    parser.add_argument("--cuda-graphs", action="store_true", help="runtime.cuda_graphs (needs --compile)")
    parser.add_argument("--quant", choices=QUANT_MODES, default="none", help="DiT weight precision (the pipeline's quant=)")
    parser.add_argument("--vae-dtype", choices=("float32", "bfloat16", "float16"), help="default: bf16 CUDA, fp32 CPU")
    parser.add_argument("--peak-tflops", type=float, help="override the bf16 dense peak (needed for MFU on CPU)")
    parser.add_argument("--out", type=Path, default=Path("outputs/speed_table.json"), help="JSON, written atomically")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    check_options(parser, args, device)
    return args, device


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device) -> None:
    """Refuse unsupported combinations up front, with the reason, by the pipeline's own rules."""
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if (args.compile != "none" or args.cuda_graphs) and args.warmup < 1:
        parser.error("--compile / --cuda-graphs need --warmup >= 1 so compilation and graph capture are not timed")
    try:
        args.runtime = RuntimeConfig(args.compile, args.cuda_graphs, args.attn_backend)
        check_runtime(args.runtime, device, args.quant)
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> dict:
    args, device = parse_args(argv)
    peak = device_peak(str(device), args.peak_tflops)
    cuda = device.type == "cuda"
    device_label = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine_record(device)

    def write(results: list[StageResult], complete: bool) -> dict:
        """The report so far, written after every stage: a run cut off still leaves its stages."""
        report = {
            "created": created,
            "complete": complete,
            "arch": args.arch,
            "device": device_label,
            "peak_bf16_dense_tflops": peak.bf16_dense_tflops if peak else None,
            "memory": "cuda max_memory_allocated" if cuda else "process peak RSS (VmHWM)",
            "torch": torch.__version__,
            "magihuman": machine,  # fingerprint + calibration matmul: which machine this was
            "runtime": asdict(args.runtime) | {"label": args.runtime.label},
            "options": {k: v for k, v in vars(args).items() if k not in ("out", "runtime")},
            "stages": [asdict(r) for r in results],
            "totals_seconds": clip_totals(results, args.resolutions),
            "paper_h100_seconds": {k: asdict(v) for k, v in PAPER_H100.items()},
        }
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        return report

    results = run_table(args, device, peak, on_stage=lambda done: write(done, complete=False))
    print_table(results, clip_totals(results, args.resolutions), device_label, peak, args)
    report = write(results, complete=True)
    print(f"\nwrote {args.out}")
    return report


# ---------------------------------------------------------------------------------------
# Publishing a device check: the JSON of record and the table in docs/performance.md.

TABLE_START, TABLE_END = "<!-- device-table:start -->", "<!-- device-table:end -->"


def publish(report_paths: list[str], results_path: str, doc_path: str) -> None:
    """Merge the speed-table reports that exist into ``results_path`` and rewrite the marked
    device table of ``doc_path`` from them (runs side by side, the paper and the compute floor)."""
    reports = [json.loads(Path(p).read_text()) for p in report_paths if Path(p).is_file()]
    if not reports:
        return
    write_atomic(_ensure_parent(Path(results_path)), json.dumps({"runs": reports}, indent=2) + "\n")
    doc = Path(doc_path)
    text = doc.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{doc}: no {TABLE_START} ... {TABLE_END} block to fill")
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    write_atomic(doc, head + TABLE_START + "\n" + device_table(reports, results_path) + TABLE_END + tail)


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def device_table(reports: list[dict], source: str) -> str:
    """Markdown: per stage the seconds of every run beside the paper, the compute floor (FLOPs at
    the card's dense bf16 peak), TFLOP/s and MFU; then per-clip totals."""
    first = reports[0]
    peak = first["peak_bf16_dense_tflops"]
    labels = [r["runtime"]["label"] + ("" if r.get("complete") else " (cut off)") for r in reports]
    lines = [f"Measured {first['created']} on {first['device']} (torch {first['torch']}, {first['arch']} "
             f"architecture, random weights, {first['options']['duration']:g} s clip); JSON: `{source}`.", "",
             "| stage | res | paper s | floor s | " + " | ".join(f"{label} s | TFLOP/s | MFU" for label in labels) + " |",
             "|---" * (4 + 3 * len(reports)) + "|"]  # fmt: skip
    keys = [(s["kind"], s["resolution"]) for s in first["stages"]]
    for kind, res in keys:
        rows = [next((s for s in r["stages"] if (s["kind"], s["resolution"]) == (kind, res)), None) for r in reports]
        flops = rows[0]["flops"]
        floor = flops / (peak * 1e12) if flops and peak else None
        cells = [f"{fmt(s['seconds'], '.2f')} | {fmt(s['tflops'], '.0f')} | {fmt(s['mfu'], '.0%')}" if s else "- | - | -"
                 for s in rows]  # fmt: skip
        lines.append(f"| {kind} | {res} | {fmt(rows[0]['paper_seconds'], '.1f')} | {fmt(floor, '.2f')} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "| clip | paper total s | " + " | ".join(f"{label} total s" for label in labels) + " |",
              "|---" * (2 + len(reports)) + "|"]  # fmt: skip
    for res, paper in PAPER_H100.items():
        totals = [fmt(r["totals_seconds"].get(res, {}).get("total"), ".2f") for r in reports]
        lines.append(f"| {res} | {paper.total:.1f} | " + " | ".join(totals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
