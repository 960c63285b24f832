#!/usr/bin/env python
"""Speed table: time the DiT stages and the VAE decode of a clip beside the paper's H100 rows.

The architectures are built with random weights directly on the target device (no
checkpoint, nothing is materialised on the CPU first), fed the real token counts of a
``--duration`` second clip, and timed stage by stage:

- ``base_distill``: 256p, 8 DMD steps, 1 pass (the paper's "base" column)
- ``base_cfg``: 256p, 32 UniPC steps, cond + uncond batched into one forward
- ``sr``: 540p and 1080p, 5 UniPC steps, 1 pass (1080p: local attention, v1 coords)
- ``decode``: the Wan2.2 TI2V-5B VAE (diffusers ``AutoencoderKLWan``) at each resolution

For each stage it reports the median time over ``--repeats`` runs (after ``--warmup``
untimed ones), the analytic FLOPs (``magihuman.harness.flops``), achieved TFLOP/s, MFU
against the device's bf16 dense peak and peak memory (``torch.cuda.max_memory_allocated``
on GPU, the process's peak RSS on CPU). ``--arch tiny`` runs the same code on the tiny
preset and a 2.9M-parameter VAE, so CI can prove the script works on a CPU.

    python scripts/speed_table.py --out outputs/speed_table.json               # GPU, full size
    python scripts/speed_table.py --arch tiny --device cpu --duration 0.2 \\
        --text-tokens 16 --resolutions 256p 540p --warmup 0 --repeats 1      # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

from magihuman.components.tiny import TINY_VIDEO_VAE_CONFIG
from magihuman.harness.devices import DevicePeak, achieved_tflops, device_peak, mfu
from magihuman.clip import SampleTokens, clip_shape, latent_size, resolution, resolution_tokens
from magihuman.harness.flops import forward_flops
from magihuman.harness.machine import machine_record
from magihuman.model import DiT, DiTConfig, Packed, concat, pack, unpack
from magihuman.model.dit import ExpertLinear, ModalityRouter
from magihuman.model.packing import write_latents
from magihuman.model.presets import FULL, FULL_SR_540P, FULL_SR_1080P, TINY, TINY_SR_1080P
from magihuman.sampling import cfg_denoise, flow_sigmas, sample_dmd, sample_unipc

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

# Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json (latent statistics omitted: decode ignores them).
WAN22_VAE = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
)
# SPEC section 6: the same shape at 2.9M parameters, as the tiny release builds it.
TINY_VAE = TINY_VIDEO_VAE_CONFIG


@dataclass(frozen=True)
class Arch:
    base: DiTConfig
    sr: dict[str, DiTConfig]
    vae: dict


ARCHS = {
    "full": Arch(base=FULL, sr={"540p": FULL_SR_540P, "1080p": FULL_SR_1080P}, vae=WAN22_VAE),
    "tiny": Arch(base=TINY, sr={"540p": TINY, "1080p": TINY_SR_1080P}, vae=TINY_VAE),
}
STAGE_KINDS = ("base_distill", "base_cfg", "sr", "decode")


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
    return stages


def paper_seconds(stage: Stage) -> float | None:
    row = PAPER_H100[stage.resolution]
    return {"base_distill": row.base, "sr": row.sr, "decode": row.decode}.get(stage.kind)


# ---------------------------------------------------------------------------------------
# Building models on the device.


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> None:
    """Random weights in place, on the model's device: N(0, 0.02) matrices, small norm offsets, zero biases."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.1 if p.dim() == 1 else 0.02, generator=generator)


def build_dit(config: DiTConfig, device: torch.device, seed: int) -> DiT:
    """The DiT allocated directly on ``device`` (bf16 linears, fp32 norms / adapter / heads)."""
    with torch.device(device):
        model = DiT(config)
    randomize_(model, seed)
    return model.eval().requires_grad_(False)


def build_vae(config: dict, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        vae = AutoencoderKLWan(**config)  # PyTorch's default random init, on the device
    return nn.Module.to(vae, dtype).eval().requires_grad_(False)  # nn.Module.to: diffusers' override warns needlessly


class Fp8ExpertLinear(ExpertLinear):
    """An :class:`ExpertLinear` re-expressed as one ``nn.Linear`` per expert, so torchao can swap them.

    ``weight`` stays as an empty bf16 placeholder: the DiT reads ``.weight.dtype`` to pick
    the residual stream's dtype.
    """

    def __init__(self, source: ExpertLinear):
        nn.Module.__init__(self)
        self.num_experts = source.num_experts
        w = source.weight.detach()
        self.weight = nn.Parameter(w.new_empty(0), requires_grad=False)
        self.experts = nn.ModuleList()
        for chunk in w.chunk(self.num_experts):
            linear = nn.Linear(chunk.shape[1], chunk.shape[0], bias=False, device="meta")
            linear.weight = nn.Parameter(chunk, requires_grad=False)
            self.experts.append(linear)

    def forward(self, x: Tensor, router: ModalityRouter, out_dtype: torch.dtype) -> Tensor:
        x = x.to(self.weight.dtype)
        if self.num_experts == 1:
            return self.experts[0](x).to(out_dtype)
        return torch.cat([e(chunk) for e, chunk in zip(self.experts, router.split(x))]).to(out_dtype)


def split_expert_linears(model: DiT) -> DiT:
    """Replace every block ExpertLinear by an :class:`Fp8ExpertLinear` (same outputs, nn.Linear children)."""
    for layer in model.block.layers:
        for parent in (layer.attention, layer.mlp):
            for name, child in list(parent.named_children()):
                if type(child) is ExpertLinear:
                    setattr(parent, name, Fp8ExpertLinear(child))
    return model


def quantize_fp8(model: DiT) -> DiT:
    """fp8 (e4m3) dynamic-activation, per-row weight quantisation of the block linears via torchao.

    Adapter and heads stay fp32, as in the release.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    split_expert_linears(model)
    quantize_(
        model,
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn.startswith("block."),
    )
    return model


@dataclass(frozen=True)
class Options:
    """DiT runtime options swept by the table; each is checked for support before anything is built."""

    compile: bool
    attn_backend: str
    cuda_graphs: bool
    fp8: bool


def prepare_dit(model: DiT, options: Options) -> DiT:
    model.attn_backend = options.attn_backend
    if options.fp8:
        quantize_fp8(model)
    if options.compile:
        for layer in model.block.layers:
            layer.compile(fullgraph=True)  # a graph break is an error, not a silent eager fallback
    return model


# ---------------------------------------------------------------------------------------
# Running a DiT stage.


class HoistedForward:
    """``DiT.forward`` for one fixed packed layout, with the layout built once.

    The modality router, rotary angles and attention kernel depend only on the layout, so
    ``DiT.layout`` runs once instead of every step; with ``cuda_graph`` the layer stack
    (``DiT.layers``) is captured on the first call and replayed after (a graph needs static
    shapes and no host syncs, which building the layout would break). ``DiT.embed`` and
    ``DiT.head`` stay eager. ``tests/test_speed_table.py`` checks it equals the model.
    """

    def __init__(self, model: DiT, packed: Packed, cuda_graph: bool):
        self.model, self.cuda_graph = model, cuda_graph
        self.layout = model.layout(packed)
        self.graph: torch.cuda.CUDAGraph | None = None

    def capture(self, x: Tensor) -> None:
        self.static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuBLAS handles, compiled kernels, flex block masks
            self.model.layers(self.static_in, self.layout)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self.model.layers(self.static_in, self.layout)

    def __call__(self, packed: Packed) -> Tensor:
        x = self.model.embed(packed.x, self.layout)
        if self.cuda_graph:
            if self.graph is None:
                self.capture(x)
            self.static_in.copy_(x)
            self.graph.replay()
            x = self.static_out
        else:
            x = self.model.layers(x, self.layout)
        return self.model.head(x, self.layout)


class PackedVelocity:
    """Sampler velocity ``(video [B,C,T,H,W], audio [B,Na,Ca], sigma)`` -> same shapes, one DiT forward.

    The layout (coordinates, modality ids, text rows, attention spans) is packed once; each
    call only writes the video and audio rows of the B samples (cond, then uncond) into the
    token buffer on the device.
    """

    def __init__(self, model: DiT, texts: list[Tensor], tokens: SampleTokens, coords_style: str, cuda_graph: bool):
        t, hp, wp = tokens.grid
        channels = model.config.video_in_channels // 4
        audio = torch.zeros(tokens.num_audio, model.config.audio_in_channels)
        video = torch.zeros(channels, t, 2 * hp, 2 * wp)
        device = next(model.parameters()).device
        self.packed = concat([pack(video, audio, text.cpu(), coords_style) for text in texts]).to(device)
        self.forward = HoistedForward(model, self.packed, cuda_graph=True) if cuda_graph else model

    def __call__(self, video: Tensor, audio: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        for b in range(len(self.packed.samples)):
            write_latents(self.packed, b, video[b], audio[b])
        rows = unpack(self.forward(self.packed), self.packed)
        return torch.stack([v for v, _ in rows]).to(video.dtype), torch.stack([a for _, a in rows]).to(audio.dtype)


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
    velocity = PackedVelocity(model, texts, tokens, coords_style, options.cuda_graphs)
    sigmas = flow_sigmas(stage.steps)

    if stage.kind == "base_distill":
        return lambda: sample_dmd(velocity, video, audio, sigmas, generator=g, progress=False)
    if stage.kind == "base_cfg":
        denoise = cfg_denoise(velocity, scale=5.0, audio_scale=5.0)
        return lambda: sample_unipc(denoise, video, audio, sigmas, progress=False)
    return lambda: sample_unipc(velocity, video, audio, sigmas, progress=False)


# ---------------------------------------------------------------------------------------
# Timing and memory.


class PeakMemory:
    """Peak memory over a window: CUDA max allocated, or the process's peak RSS (VmHWM) on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:  # Linux: "5" resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # then VmHWM (or ru_maxrss) is the peak since process start

    def read(self) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        try:
            return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
        except (OSError, AttributeError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_runs(run: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per run: CUDA events around each run on GPU (synchronised), perf_counter on CPU."""
    cuda = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


# ---------------------------------------------------------------------------------------
# The table.


def run_table(args: argparse.Namespace, device: torch.device, peak: DevicePeak | None) -> list[StageResult]:
    arch = ARCHS[args.arch]
    options = Options(args.compile, args.attn_backend, args.cuda_graphs, args.fp8)
    memory = PeakMemory(device)
    results: list[StageResult] = []
    model, model_config = None, None
    for stage in plan_stages(args.stages, args.resolutions):
        print(f"[speed_table] {stage.kind} {stage.resolution} ...", file=sys.stderr, flush=True)
        if stage.kind == "decode":
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
            if options.compile:
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
        seconds = median(times)
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
    return results


def decode_runner(arch: Arch, stage: Stage, args: argparse.Namespace, device: torch.device) -> Callable[[], Tensor]:
    default = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, args.vae_dtype) if args.vae_dtype else default
    vae = build_vae(arch.vae, device, dtype)
    h, w = latent_size(*reversed(resolution(PAPER_PATHS[stage.resolution]).dit_size))
    g = torch.Generator(device=device).manual_seed(args.seed)
    shape = (1, arch.vae["z_dim"], clip_shape(args.duration).latent_frames, h, w)
    latent = torch.randn(shape, generator=g, device=device, dtype=dtype)
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


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    parser.add_argument("--compile", action="store_true", help="torch.compile each TransformerLayer")
    parser.add_argument("--attn-backend", choices=("sdpa", "flex"), default="sdpa")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the layer stack from a CUDA graph")
    parser.add_argument("--fp8", action="store_true", help="fp8 block linears via torchao (sm_89+)")
    parser.add_argument("--vae-dtype", choices=("float32", "bfloat16", "float16"), help="default: bf16 CUDA, fp32 CPU")
    parser.add_argument("--peak-tflops", type=float, help="override the bf16 dense peak (needed for MFU on CPU)")
    parser.add_argument("--out", type=Path, default=Path("outputs/speed_table.json"), help="JSON, written atomically")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    check_options(parser, args, device)
    return args, device


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device) -> None:
    """Refuse unsupported combinations up front, with the reason, instead of silently ignoring a flag."""
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if (args.compile or args.cuda_graphs) and args.warmup < 1:
        parser.error("--compile / --cuda-graphs need --warmup >= 1 so compilation and graph capture are not timed")
    if args.cuda_graphs and not cuda:
        parser.error(f"--cuda-graphs needs a CUDA device; got --device {args.device}")
    if args.fp8:
        if not cuda:
            parser.error(f"--fp8 needs a CUDA GPU with fp8 tensor cores (sm_89+: L4, H100, H200); got {args.device}")
        if torch.cuda.get_device_capability(device) < (8, 9):
            parser.error(f"--fp8: {torch.cuda.get_device_name(device)} has no fp8 tensor cores (needs sm_89+)")
        try:
            import torchao  # noqa: F401
        except ImportError:
            parser.error("--fp8 needs torchao, which is not installed (pip install torchao)")


def main(argv: list[str] | None = None) -> dict:
    args, device = parse_args(argv)
    peak = device_peak(str(device), args.peak_tflops)
    cuda = device.type == "cuda"
    device_label = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    results = run_table(args, device, peak)
    totals = clip_totals(results, args.resolutions)
    print_table(results, totals, device_label, peak, args)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arch": args.arch,
        "device": device_label,
        "peak_bf16_dense_tflops": peak.bf16_dense_tflops if peak else None,
        "memory": "cuda max_memory_allocated" if cuda else "process peak RSS (VmHWM)",
        "torch": torch.__version__,
        "magihuman": machine_record(device),  # fingerprint + calibration matmul: which machine this was
        "options": {k: v for k, v in vars(args).items() if k != "out"},
        "stages": [asdict(r) for r in results],
        "totals_seconds": totals,
        "paper_h100_seconds": {k: asdict(v) for k, v in PAPER_H100.items()},
    }
    write_json_atomic(args.out, report)
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
