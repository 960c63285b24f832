"""Peak GPU memory of a generation run, predicted before it runs, and a meter to check it.

``magihuman-plan resolution=1080p duration=5 card=24 offload=layer quant=int8`` prints the
peak of every stage (text encode, base DiT, SR DiT, video decode, audio decode) and whether
the run fits the card. Everything is computed from shapes; nothing is loaded.

What is counted, per stage: the weights on the GPU during that stage (by dtype and
quantization, FSDP sharding, and offload mode: ``none`` keeps every component loaded so
far, ``model`` only the active one, ``layer`` streams DiT and text-encoder layers with
``resident_layers`` of them on the GPU) plus the stage's working memory:

- **DiT forward**: the op-by-op live set of one :class:`~magihuman.model.dit.TransformerLayer`
  at the stage's token count (both CFG rows when they run as one batch; ``L / cp`` per rank
  under context parallelism): residual stream, normed input, the fp32 qkv projection,
  rotated q/k, the attention output, and the MLP intermediate with its activation
  temporaries. The peak at full size is a gelu7 layer's MLP: ``16 * 4H`` bytes per token of
  fp32 intermediates beside the layer input, the residual and the attention output (10H).
  Attention workspace: flash kernels hold O(L) (bf16 q/k/v copies, output, log-sum-exp) for
  a full layer; a local layer runs one SDPA per span, so its largest span's gathered keys
  count. The coefficients were read off the code and are checked against measured CPU
  peaks on small models (``tests/test_memory_planner.py``).
- **Video decode** (Wan2.2 VAE, one latent frame at a time with cached causal convs): a
  working set of ``vae_work_factor(num_res_blocks)`` top-level activations (fitted to
  measured CPU peaks, see :func:`vae_work_factor`) plus the decoded clip, which diffusers
  grows by concatenation and the pipeline then copies to fp32. Tiled decode: the working
  set of one tile plus every decoded tile (tiles overlap) and the stitched result.
- **Text encoder** (T5Gemma 9B encoder, at most 640 tokens) and **audio decode**: weights
  plus small coarse activation estimates (not measured: they are far from the peak).

Not counted: memory the CUDA caching allocator reserves but does not hand out
(fragmentation) and the CUDA context; both are covered by ``CUDA_CONTEXT_BYTES`` and the
``margin``. Sizes are in GiB (2**30 bytes); a "24 GB" card is taken as 24 GiB.

:class:`LiveTensorBytes` measures what the planner predicts: the peak sum of live tensor
storages created under it (a ``TorchDispatchMode``), on any device including the CPU,
which has no allocator statistics. Scratch that never becomes a tensor (cuBLAS / cuDNN
workspaces) is invisible to it; CUDA's allocator does count those, so the GPU check warms
up first and measures the second forward.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from functools import cache

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from magihuman.cli.errors import cli_errors
from magihuman.clip import DEFAULT_TEXT_TOKENS, FRAME_RECEPTIVE_FIELD, SampleTokens, clip_shape, clip_tokens
from magihuman.clip import resolution as lookup_resolution
from magihuman.harness.flops import swiglu_intermediate
from magihuman.model.dit import NUM_MODALITIES, DiTConfig
from magihuman.model.offload import OFFLOAD_MODES, OFFLOAD_PRESETS, OffloadConfig, OffloadMode
from magihuman.model.packing import attention_segments, local_attention_ranges
from magihuman.model.presets import preset
from magihuman.model.quant import QUANT_MODES, QuantConfig, QuantMode, linear_weight_bytes
from magihuman.parallel import ParallelConfig
from magihuman.parallel.context import kv_replicas

GIB = 2**30
CARDS_GB = (24, 40, 80, 141)
CUDA_CONTEXT_BYTES = GIB  # CUDA context + cuBLAS/cuDNN workspaces, outside the caching allocator
DEFAULT_MARGIN = 0.10  # share of the card kept free for allocator fragmentation


# ---------------------------------------------------------------------------------------
# Components other than the DiT (shapes of the public checkpoints).


@dataclass(frozen=True)
class TextEncoderShape:
    """A Gemma-2-style encoder stack (T5Gemma 9B-9B's encoder is Gemma 2 9B shaped)."""

    layers: int = 42
    hidden: int = 3584
    intermediate: int = 14336
    heads: int = 16
    kv_heads: int = 8
    head_dim: int = 256
    vocab: int = 256000
    max_tokens: int = 640

    @property
    def layer_params(self) -> int:
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        return attn + 3 * self.hidden * self.intermediate + 4 * self.hidden  # GeGLU MLP, 4 norms

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.vocab * self.hidden + self.hidden


@dataclass(frozen=True)
class VideoVAEShape:
    """Wan2.2 VAE (``AutoencoderKLWan``): what sizes its decode."""

    params: int = 704_688_668  # counted on the diffusers model built with the Wan2.2 config
    decoder_base_dim: int = 256
    num_res_blocks: int = 2
    patch_size: int = 2
    spatial_stride: int = 16
    temporal_stride: int = 4
    out_channels: int = 3


@dataclass(frozen=True)
class AudioVAEShape:
    """Stable Audio Open's Oobleck VAE, run in fp32 (as the reference)."""

    params: int = 156_112_514
    decoder_channels: int = 128
    sample_rate: int = 51_200


T5GEMMA_9B = TextEncoderShape()
WAN22_VAE = VideoVAEShape()
OOBLECK = AudioVAEShape()


# ---------------------------------------------------------------------------------------
# What the planner is asked.


@dataclass(frozen=True)
class Precision:
    """Bytes per element where dtypes differ between the GPU run and a CPU check."""

    linear: int = 2  # transformer linears compute in bf16
    attention: int = 2  # flash attention in bf16 on CUDA (the DiT's default there)
    component: int = 2  # text encoder and video VAE (bf16 on CUDA)


GPU_PRECISION = Precision()
CPU_PRECISION = Precision(attention=4, component=4)  # what the pipeline uses on a CPU


@dataclass(frozen=True)
class PlanConfig:
    """One configuration to plan; ``magihuman-plan`` fills it from ``key=value`` arguments."""

    resolution: str = "256p"
    duration: float = 5
    card: float = 24  # GiB
    offload: OffloadMode = "none"
    resident_layers: int = 2  # layer streaming: layers on the GPU at once (current + prefetched)
    vae_tiling: bool = False
    mlp_chunk_tokens: int | None = None  # DiT MLPs over at most this many tokens at a time
    quant: QuantMode = "none"
    cfg_rows: int = 1  # base stage rows per forward: 1 (distilled, default) or 2 (base model with CFG)
    sr_cfg_rows: int = 1  # SR stage rows per forward (1 by default, SPEC section 3)
    text_tokens: int = DEFAULT_TEXT_TOKENS
    cp: int = 1  # context parallel (Ulysses) ranks sharing the token sequence
    cfg_parallel: bool = False  # CFG rows on different ranks
    fsdp: bool = False  # DiT weights sharded over all ranks, each loading only its shard
    replicas: int = 1  # copies of the (cfg, cp) grid: with fsdp, more ranks to shard over
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        lookup_resolution(self.resolution)
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {self.offload!r}")
        if self.quant not in QUANT_MODES:
            raise ValueError(f"quant must be one of {QUANT_MODES}, got {self.quant!r}")
        if self.resident_layers < 1 or self.cp < 1 or self.cfg_rows not in (1, 2) or self.sr_cfg_rows not in (1, 2):
            raise ValueError("resident_layers and cp must be >= 1; cfg_rows and sr_cfg_rows 1 or 2")
        if self.cfg_parallel and self.cfg_rows == 1 and self.sr_cfg_rows == 1:
            raise ValueError("cfg_parallel needs cfg_rows=2 or sr_cfg_rows=2")
        # the runtime's own rules for the parallel setup (replicas need fsdp, cp >= 1)
        ParallelConfig(cp_size=self.cp, cfg_parallel=self.cfg_parallel, fsdp=self.fsdp, replicas=self.replicas)
        if self.fsdp and (self.quant != "none" or self.offload != "none"):
            raise ValueError("fsdp runs with quant=none and offload=none only (as the pipeline)")

    @classmethod
    def from_runtime(
        cls, offload: OffloadConfig, quant: QuantConfig, parallel: ParallelConfig | None = None, **kwargs
    ) -> PlanConfig:
        """The plan of a run configured with the runtime's own offload, quant and parallel configs."""
        if parallel is not None:
            kwargs |= dict(cp=parallel.cp_size, cfg_parallel=parallel.cfg_parallel, fsdp=parallel.fsdp,
                           replicas=parallel.replicas)  # fmt: skip
        return cls(offload=offload.mode, resident_layers=offload.resident_layers, vae_tiling=offload.vae_tiling,
                   mlp_chunk_tokens=offload.mlp_chunk_tokens, quant=quant.mode, **kwargs)  # fmt: skip

    @property
    def world_size(self) -> int:
        return self.replicas * self.cp * (2 if self.cfg_parallel else 1)


@dataclass(frozen=True)
class StagePeak:
    """One stage's predicted peak: weights on the GPU plus working memory (bytes)."""

    name: str
    weights: int
    working: int
    detail: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.working


@dataclass(frozen=True)
class Plan:
    config: PlanConfig
    stages: tuple[StagePeak, ...]

    @property
    def peak(self) -> StagePeak:
        return max(self.stages, key=lambda s: s.total)

    @property
    def usable_bytes(self) -> float:
        """What the caching allocator may hand out on the card, after the context and margin."""
        return (self.config.card * GIB - CUDA_CONTEXT_BYTES) * (1 - self.config.margin)

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.usable_bytes

    def summary(self) -> str:
        c = self.config
        lines = [
            f"{c.resolution} {c.duration:g}s  offload={c.offload}"
            + (f"(resident_layers={c.resident_layers})" if c.offload == "layer" else "")
            + f"  quant={c.quant}  vae_tiling={c.vae_tiling}  cfg_rows={c.cfg_rows}/{c.sr_cfg_rows}"
            + (f"  cp={c.cp}" if c.cp > 1 else "") + ("  cfg_parallel" if c.cfg_parallel else "")
            + (f"  fsdp over {c.world_size} ranks" if c.fsdp else ""),
            f"  {'stage':<14}{'weights':>10}{'working':>10}{'total':>10}  GiB",
        ]
        for s in self.stages:
            sizes = "".join(f"{b / GIB:>10.2f}" for b in (s.weights, s.working, s.total))
            lines.append(f"  {s.name:<14}{sizes}  {s.detail}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(
            f"  peak {self.peak.total / GIB:.2f} GiB ({self.peak.name}) {verdict} a {c.card:g} GiB card "
            f"(usable {self.usable_bytes / GIB:.2f} GiB after {CUDA_CONTEXT_BYTES / GIB:.0f} GiB context "
            f"and a {c.margin:.0%} margin)"
        )
        load = self.load
        lines.append(f"  DiT load per rank: host {load.host / GIB:.2f} GiB, device {load.device / GIB:.2f} GiB "
                     + ("(each rank reads only its shard)" if c.fsdp else "(the whole checkpoint)"))  # fmt: skip
        return "\n".join(lines)

    @property
    def load(self) -> LoadPeak:
        """The largest DiT load of the run, per rank."""
        loads = [dit_load_peak(stage.config, self.config) for stage in dit_stages(self.config)]
        return LoadPeak(max(x.host for x in loads), max(x.device for x in loads))


# ---------------------------------------------------------------------------------------
# DiT weights.


@dataclass(frozen=True)
class LayerDims:
    """Widths of one transformer layer, as :class:`~magihuman.model.dit.TransformerLayer` builds it."""

    hidden: int
    heads: int
    head_dim: int
    kv_heads: int
    gate: int
    experts: int
    gated: bool  # swiglu7 (up projection 2x intermediate) vs gelu7
    intermediate: int
    local: bool
    post_norm: bool

    @classmethod
    def of(cls, config: DiTConfig, index: int) -> LayerDims:
        gated = index not in config.gelu7_layers
        return cls(
            hidden=config.hidden_size,
            heads=config.num_heads,
            head_dim=config.head_dim,
            kv_heads=config.num_query_groups,
            gate=config.num_heads if config.enable_attn_gating else 0,
            experts=NUM_MODALITIES if index in config.mm_layers else 1,
            gated=gated,
            intermediate=swiglu_intermediate(config.hidden_size) if gated else 4 * config.hidden_size,
            local=index in config.local_attn_layers,
            post_norm=index in config.post_norm_layers,
        )

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def qkv(self) -> int:
        return self.q + 2 * self.kv + self.gate

    @property
    def up(self) -> int:
        return self.intermediate * (2 if self.gated else 1)

    def linears(self) -> list[tuple[int, int]]:
        """(out features of one expert, in features) of qkv, proj, up, down."""
        h = self.hidden
        return [(self.qkv, h), (h, self.q), (self.up, h), (h, self.intermediate)]

    def norm_params(self) -> int:
        widths = 2 * self.hidden + 2 * self.head_dim + (2 * self.hidden if self.post_norm else 0)
        return widths * self.experts


def layer_weight_bytes(config: DiTConfig, index: int, quant: QuantMode = "none") -> int:
    """Bytes of one layer's weights: bf16 (or quantized) linears, fp32 norms."""
    d = LayerDims.of(config, index)
    linears = sum(linear_weight_bytes(out, inp, quant, d.experts) for out, inp in d.linears())
    return linears + 4 * d.norm_params()


def outer_weight_bytes(config: DiTConfig) -> int:
    """Adapter (fp32 linears with bias), rope bands, final norms and heads: never streamed."""
    h = config.hidden_size
    adapter = sum((c + 1) * h for c in (config.video_in_channels, config.audio_in_channels, config.text_in_channels))
    heads = h * (config.video_in_channels + config.audio_in_channels)
    return 4 * (adapter + config.head_dim // 8 + 2 * h + heads)


def dit_weight_bytes(config: DiTConfig, quant: QuantMode = "none") -> int:
    return outer_weight_bytes(config) + sum(layer_weight_bytes(config, i, quant) for i in range(config.num_layers))


def streamed_weight_bytes(config: DiTConfig, quant: QuantMode, resident_layers: int) -> int:
    """Layer streaming: the outer weights plus the heaviest run of ``resident_layers`` consecutive layers.

    The prefetch wraps around (the last layer prefetches the first for the next forward).
    """
    sizes = [layer_weight_bytes(config, i, quant) for i in range(config.num_layers)]
    n = min(resident_layers, len(sizes))
    window = max(sum(sizes[(i + j) % len(sizes)] for j in range(n)) for i in range(len(sizes)))
    return outer_weight_bytes(config) + window


def largest_tensor_bytes(config: DiTConfig) -> int:
    """Bytes of the DiT's largest stored tensor: an expert layer's stacked up projection (bf16)."""
    layers = (linear_weight_bytes(out, inp, "none", d.experts)
              for d in (LayerDims.of(config, i) for i in range(config.num_layers)) for out, inp in d.linears())  # fmt: skip
    return max(*layers, 4 * config.hidden_size * config.text_in_channels)


@dataclass(frozen=True)
class LoadPeak:
    """What one rank holds at the peak of loading a DiT (bytes)."""

    host: int
    device: int


def dit_load_peak(dit: DiTConfig, config: PlanConfig) -> LoadPeak:
    """Host and device bytes one rank holds while one DiT loads.

    With FSDP each rank reads only its rows of every tensor straight into its shard on the
    device (:func:`magihuman.parallel.fsdp.load_sharded`): the device holds its 1/P, the host
    one tensor's rows in flight. Otherwise the whole checkpoint is read on the host (memory
    mapped) and then copied to the device (kept on the host under offload).
    """
    full = dit_weight_bytes(dit, config.quant)
    if config.fsdp:
        return LoadPeak(-(-largest_tensor_bytes(dit) // config.world_size), -(-full // config.world_size))
    return LoadPeak(dit_weight_bytes(dit), full if config.offload == "none" else 0)


def largest_expert_linear(config: DiTConfig) -> int:
    """Elements of the largest single-expert weight block (the int8 dequantize workspace)."""
    return max(out * inp for i in range(config.num_layers) for out, inp in LayerDims.of(config, i).linears())


# ---------------------------------------------------------------------------------------
# DiT activations.


@dataclass(frozen=True)
class Span:
    """One SDPA call: its query count, key count, and whether keys are gathered from several ranges."""

    queries: int
    keys: int
    gathered: bool


@cache
def sample_spans(sample: SampleTokens, local: bool, receptive_field: int = FRAME_RECEPTIVE_FIELD) -> tuple[Span, ...]:
    """The spans :func:`~magihuman.model.dit.attention_spans` builds for one sample."""
    if not local:
        return (Span(sample.length, sample.length, False),)
    q, k = local_attention_ranges(sample.grid, sample.num_audio + sample.num_text, receptive_field)
    segments = attention_segments(q, k)
    return tuple(Span(end - start, sum(b - a for a, b in keys), len(keys) > 1) for start, end, keys in segments)


def span_workspace(d: LayerDims, span: Span, p: Precision, head_share: float = 1.0) -> int:
    """Bytes SDPA adds for one span: dtype copies of q/k/v, gathered keys, output, log-sum-exp.

    ``head_share`` is the fraction of heads this rank attends with (1/cp under Ulysses).
    """
    cast = p.attention if p.attention != 4 else 0  # fp32 inputs are used in place
    per_query = (cast + p.attention) * d.q + 4 * d.heads
    per_key = 2 * d.kv * ((4 if span.gathered else 0) + cast)
    return int(head_share * (per_query * span.queries + per_key * span.keys))


def attention_phase_bytes(
    d: LayerDims, tokens: int, resid: int, permuted: bool, workspace: int, p: Precision, linear_workspace: int = 0
) -> int:
    """Peak of :class:`~magihuman.model.dit.Attention` above its input, over its op sequence.

    ``workspace`` is the SDPA span workspace, ``linear_workspace`` what a quantized linear
    adds while it runs (both absolute bytes).
    """
    q, kv, h = d.q, d.kv, d.hidden
    base = resid * h + 4 * d.qkv  # normed input (residual dtype) and the fp32 q|k|v|gate projection
    v_copy = 4 * kv if permuted else 0  # ungrouping copies v out of the projection
    per_token = {
        "qkv": resid * h + (p.linear * h if resid != p.linear else 0) + (p.linear + 4) * d.qkv,
        "ungroup": base + 2 * (4 * q + 4 * kv) + 4 * kv if permuted else 0,
        "rope_q": base + v_copy + 4 * q + 4 * kv + 7 * q,  # apply_rope holds 1.75x its input
        "rope_k": base + v_copy + 4 * q + 4 * kv + 4 * q + 7 * kv,
        "sdpa": base + v_copy + 4 * q + 4 * kv + 4 * q,
        "gate": base + v_copy + 4 * q + 4 * kv + 4 * q + 4 * d.heads + 4 * q,
        "proj": base + v_copy + 4 * q + 4 * kv + 4 * q + p.linear * q + p.linear * h * (2 if d.experts > 1 else 1),
    }  # expert linears hold their per-expert outputs and the concatenation at once
    extra = {"sdpa": workspace, "qkv": linear_workspace, "proj": linear_workspace}
    return max(v * tokens + extra.get(k, 0) for k, v in per_token.items())


def mlp_phase_bytes(
    d: LayerDims, tokens: int, resid: int, p: Precision, linear_workspace: int, chunk_tokens: int | None = None
) -> int:
    """Peak of :class:`~magihuman.model.dit.MLP` above its input: the activation's fp32 temporaries.

    With ``chunk_tokens`` the normed input and the fp32 output exist for every token, and
    the per-token temporaries only for one chunk.
    """
    h, i, up = d.hidden, d.intermediate, d.up
    cast = p.linear * h if resid != p.linear else 0
    per_token = {
        "up": cast + (p.linear + 4) * up,
        # fp32 up output + clamp + sigmoid(1.702 x) (+ its argument) / product, as gelu7 / swiglu7 run
        "activation": 4 * up + 12 * i,
        "down": 4 * up + 4 * i + p.linear * i + (p.linear * (2 if d.experts > 1 else 1) + 4) * h,
    }
    extra = {"up": linear_workspace, "down": linear_workspace}
    if chunk_tokens is None or tokens <= chunk_tokens:
        per_token["up"] += resid * h  # the normed input, freed once the up projection has read it
        return max(v * tokens + extra.get(k, 0) for k, v in per_token.items())
    return (resid + 4) * h * tokens + max(v * chunk_tokens + extra.get(k, 0) for k, v in per_token.items())


def linear_workspace_bytes(config: DiTConfig, quant: QuantMode, p: Precision) -> int:
    """Transient weight copies of quantized linears: int8 dequantizes one expert block (x2 while scaling).

    An upper bound: the largest block of the model, both copies, counted beside the output.
    """
    if quant == "int8":
        return 2 * p.linear * largest_expert_linear(config)
    return 0


@dataclass(frozen=True)
class ForwardActivations:
    """Activation bytes of one DiT forward: inputs on the device, plus the working peak above them."""

    inputs: int
    working: int

    @property
    def total(self) -> int:
        return self.inputs + self.working


def dit_forward_bytes(
    config: DiTConfig,
    samples: Sequence[SampleTokens],
    precision: Precision = GPU_PRECISION,
    quant: QuantMode = "none",
    cp: int = 1,
    receptive_field: int = FRAME_RECEPTIVE_FIELD,
    mlp_chunk_tokens: int | None = None,
) -> ForwardActivations:
    """Peak activation bytes of one forward over ``samples`` packed together (one rank's share under cp).

    The residual stream is fp32 in every layer (the adapter's dtype, as in the release). Two
    samples in one batch are not grouped by modality, so the router permutes (and copies) q, k, v.
    """
    total = sum(s.length for s in samples)
    tokens = math.ceil(total / cp)
    permuted = len(samples) > 1
    channels = max(config.video_in_channels, config.audio_in_channels, config.text_in_channels)
    rope = 2 * 4 * 3 * (config.head_dim // 8)
    inputs = total * (4 * channels + 4 * 9 + 8)  # packed x, coords, modality (whole sequence on every rank)
    persistent = tokens * (rope + (16 if permuted else 0))  # sin/cos, router order/inverse
    linear_ws = linear_workspace_bytes(config, quant, precision)
    peak = 0
    for index in range(config.num_layers):
        d = LayerDims.of(config, index)
        resid_in = 4
        spans = [span for s in samples for span in sample_spans(s, d.local, receptive_field)]
        # Ulysses attends with whole KV heads per rank, replicated when cp does not divide them
        exchanged = replace(d, kv_heads=d.kv_heads * kv_replicas(d.heads, d.kv_heads, cp))
        workspace = max(span_workspace(exchanged, span, precision, 1 / cp) for span in spans)
        if cp > 1:  # Ulysses: bf16 q/k/v and output in both layouts, send and receive buffers
            workspace += 4 * precision.attention * (exchanged.q + 2 * exchanged.kv) * tokens
        attention = resid_in * d.hidden * tokens + attention_phase_bytes(
            d, tokens, resid_in, permuted, workspace, precision, linear_ws
        )
        # during the MLP the layer's input (the caller still holds it), the residual after the
        # attention add and the attention output (linear dtype) are all alive
        resid_mlp = 4
        held = (resid_in + resid_mlp + precision.linear) * d.hidden * tokens
        mlp = held + mlp_phase_bytes(d, tokens, resid_mlp, precision, linear_ws, mlp_chunk_tokens)
        peak = max(peak, attention, mlp)
    return ForwardActivations(inputs=inputs, working=persistent + peak)


# ---------------------------------------------------------------------------------------
# Video and audio decode, text encoder.


def vae_work_factor(num_res_blocks: int) -> float:
    """Live bytes of one latent-frame decode step, in units of the top-level activation.

    The top-level activation is ``decoder_base_dim x 4 frames x (H / patch) x (W / patch)``.
    Fitted to measured CPU peaks of Wan2.2-structured VAEs (``dim_mult=[1,2,4,4]``,
    residual, patch 2) with decoder widths 16 and 32, 1 and 2 res blocks: 19.5 (1 block),
    21.3 (2 blocks), independent of width and size within 3%.
    """
    return 17.7 + 1.8 * num_res_blocks


def _top_activation(vae: VideoVAEShape, height: int, width: int, dtype_bytes: int) -> int:
    """The decoder's widest activation of one frame step: base width x 4 frames at (H, W) / patch."""
    pixels = (height // vae.patch_size) * (width // vae.patch_size)
    return vae.decoder_base_dim * vae.temporal_stride * pixels * dtype_bytes


def decode_output_bytes(vae: VideoVAEShape, frames: int, height: int, width: int, dtype_bytes: int) -> int:
    return vae.out_channels * frames * height * width * dtype_bytes


def video_decode_bytes(
    vae: VideoVAEShape, latent_frames: int, height: int, width: int, dtype_bytes: int, tiled: bool,
    tile: int = 256, stride: int = 192,
) -> int:  # fmt: skip
    """Working peak of :meth:`WanVideoVAE.decode` for a ``height x width`` clip (weights excluded).

    Untiled: one frame step's working set while the decoded frames accumulate, or the last
    concatenation (old + new clip), or the clip next to its fp32 copy (the pipeline's
    ``.float()``). Tiled (diffusers' scheme): one tile's working set while the decoded tiles
    accumulate (they overlap, ``(tile / stride)^2`` of the clip), then the stitched rows and
    the result are built beside them.
    """
    frames = (latent_frames - 1) * vae.temporal_stride + 1
    out = decode_output_bytes(vae, frames, height, width, dtype_bytes)
    fp32_copy = out + decode_output_bytes(vae, frames, height, width, 4)
    if not tiled:
        top = _top_activation(vae, height, width, dtype_bytes)
        return int(max(vae_work_factor(vae.num_res_blocks) * top + out, 2 * out, fp32_copy))
    tile_h, tile_w = min(tile, height), min(tile, width)
    top = _top_activation(vae, tile_h, tile_w, dtype_bytes)
    tiles = math.ceil(height / stride) * math.ceil(width / stride) if (height > tile or width > tile) else 1
    decoded_tiles = out * tiles * tile_h * tile_w / (height * width)
    return int(max(vae_work_factor(vae.num_res_blocks) * top + decoded_tiles, decoded_tiles + 3 * out, fp32_copy))


def text_encoder_bytes(te: TextEncoderShape, dtype_bytes: int) -> int:
    return te.params * dtype_bytes


def text_encode_working_bytes(te: TextEncoderShape, tokens: int) -> int:
    """Coarse: a few fp32 hidden-size and MLP-width tensors per token (640 tokens: ~0.2 GiB)."""
    return tokens * 4 * (8 * te.hidden + 3 * te.intermediate)


def audio_decode_bytes(audio: AudioVAEShape, seconds: float) -> int:
    """Coarse: about eight fp32 tensors of ``decoder_channels`` at the output rate (5 s: ~1 GiB)."""
    return int(8 * audio.decoder_channels * seconds * audio.sample_rate * 4)


# ---------------------------------------------------------------------------------------
# The plan.


@dataclass(frozen=True)
class DiTStage:
    name: str
    config: DiTConfig
    samples: tuple[SampleTokens, ...]  # rows of one forward on one rank group


def dit_stages(config: PlanConfig) -> list[DiTStage]:
    """The DiT stages of a resolution: the base stage at 256p, then the SR stage if any."""
    res = lookup_resolution(config.resolution)
    rows = (1 if config.cfg_parallel else config.cfg_rows), (1 if config.cfg_parallel else config.sr_cfg_rows)
    base_h, base_w = res.base_size
    base = clip_tokens(config.duration, base_w, base_h, config.text_tokens)
    stages = [DiTStage("base_denoise", preset("full"), (base,) * rows[0])]
    if res.sr_model is not None:
        sr_h, sr_w = res.sr_size
        sr = clip_tokens(config.duration, sr_w, sr_h, config.text_tokens)
        name = "full_sr_1080p" if res.sr_model == "1080p_sr" else "full_sr_540p"
        stages.append(DiTStage("sr_denoise", preset(name), (sr,) * rows[1]))
    return stages


def _dit_resident(stage: DiTStage, config: PlanConfig) -> int:
    """DiT weights on one rank while it runs."""
    if config.offload == "layer":
        return streamed_weight_bytes(stage.config, config.quant, config.resident_layers)
    full = dit_weight_bytes(stage.config, config.quant)
    if config.fsdp:  # own shard of everything plus about two gathered layers (current + prefetch)
        return full // config.world_size + streamed_weight_bytes(stage.config, config.quant, 2)
    return full


def plan(config: PlanConfig, precision: Precision = GPU_PRECISION) -> Plan:
    """Predicted peak of every stage of one generation on one GPU (one rank)."""
    te = T5GEMMA_9B
    te_bytes = text_encoder_bytes(te, precision.component)
    if config.offload == "layer":
        te_resident = (te.vocab * te.hidden + config.resident_layers * te.layer_params) * precision.component
    else:
        te_resident = te_bytes
    vae_bytes = WAN22_VAE.params * precision.component
    audio_bytes = OOBLECK.params * 4
    components = te_bytes + vae_bytes + audio_bytes  # what offload=none keeps loaded from the start

    stages: list[StagePeak] = []
    on_gpu = components if config.offload == "none" else te_resident
    stages.append(StagePeak("text_encode", on_gpu, text_encode_working_bytes(te, te.max_tokens), "T5Gemma 9B encoder"))

    loaded_dits = 0
    for stage in dit_stages(config):
        resident = _dit_resident(stage, config)
        act = dit_forward_bytes(stage.config, stage.samples, precision, config.quant, config.cp,
                                mlp_chunk_tokens=config.mlp_chunk_tokens)  # fmt: skip
        if config.offload == "none":
            loaded_dits += resident
            weights = components + loaded_dits
        else:
            weights = resident
        tokens = sum(s.length for s in stage.samples)
        stages.append(StagePeak(stage.name, weights, act.total, f"{tokens} tokens x{len(stage.samples)} rows"
                                + (f" / cp {config.cp}" if config.cp > 1 else "")))  # fmt: skip

    res = lookup_resolution(config.resolution)
    h, w = res.dit_size
    latent_frames = clip_shape(config.duration).latent_frames
    decode = video_decode_bytes(WAN22_VAE, latent_frames, h, w, precision.component, config.vae_tiling)
    keep = components + loaded_dits if config.offload == "none" else vae_bytes
    stages.append(StagePeak("video_decode", keep, decode, f"{w}x{h}" + (" tiled" if config.vae_tiling else "")))
    keep = components + loaded_dits if config.offload == "none" else audio_bytes
    stages.append(StagePeak("audio_decode", keep, audio_decode_bytes(OOBLECK, config.duration), "Oobleck fp32"))
    return Plan(config, tuple(stages))


# ---------------------------------------------------------------------------------------
# Measuring.


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created while active and still alive (any device, CPU included).

    Every op's new output storages are recorded with a weak reference; a storage counts until
    it is freed. Storages that existed before (weights, inputs) never count, views never
    count twice. Call :meth:`reset_peak` to start a new peak from what is live now.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def live_bytes(self) -> int:
        self._live = {k: v for k, v in self._live.items() if not v[0].expired()}
        self.current = sum(n for _, n in self._live.values())
        return self.current

    def reset_peak(self) -> None:
        self.peak = self.live_bytes()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tensors}
        self.live_bytes()  # drop what the op's inputs released before the op
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in inputs and ref.cdata not in self._live:
                    self._live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


# ---------------------------------------------------------------------------------------
# CLI.

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_args(argv: Sequence[str]) -> PlanConfig:
    """``key=value`` arguments into a :class:`PlanConfig` (``card=24GB`` and ``card=24`` both work)."""
    return PlanConfig(**parse_values(argv))


def parse_values(argv: Sequence[str]) -> dict:
    """``key=value`` arguments as typed :class:`PlanConfig` field values (only the keys given)."""
    kinds = {f.name: f.type for f in fields(PlanConfig)}
    values: dict = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or key not in kinds:
            raise ValueError(f"expected key=value with key in {sorted(kinds)}, got {arg!r}")
        kind = kinds[key]
        if kind == "bool":
            if raw.lower() not in _BOOL:
                raise ValueError(f"{key} must be true or false, got {raw!r}")
            values[key] = _BOOL[raw.lower()]
        elif kind == "int | None":
            values[key] = None if raw.lower() in ("null", "none") else int(raw)
        elif kind in ("int", "float"):
            number = raw.lower().removesuffix("gib").removesuffix("gb").removesuffix("s")
            values[key] = int(number) if kind == "int" else float(number)
        else:
            values[key] = raw
    return values


def table(duration: float = 5, resolutions: Sequence[str] = ("256p", "540p", "1080p"), **kwargs) -> str:
    """Peak GiB per resolution x offload x quant, and which cards each fits (``magihuman-plan table``)."""
    cards = "  ".join(f"{c}GB" for c in CARDS_GB)
    lines = [f"{'resolution':<11}{'offload':<8}{'quant':<6}{'peak GiB':>9}  stage         {cards}"]
    for res in resolutions:
        for offload in ("none", "model", "layer"):
            for quant in ("none", "int8"):
                runtime = OFFLOAD_PRESETS[offload]
                p = plan(PlanConfig.from_runtime(runtime, QuantConfig(quant), resolution=res, duration=duration,
                                                 **kwargs))  # fmt: skip
                fits = ("yes" if plan(replace(p.config, card=c)).fits else "no" for c in CARDS_GB)
                verdicts = "  ".join(f"{f:>{len(str(c)) + 2}}" for f, c in zip(fits, CARDS_GB))
                lines.append(f"{res:<11}{offload:<8}{quant:<6}{p.peak.total / GIB:>9.1f}  {p.peak.name:<14}{verdicts}")
    return "\n".join(lines)


def parallel_setups(gpus: int, cfg: bool = True) -> dict[str, ParallelConfig]:
    """The multi-GPU setups of ``configs/parallel/`` sized for ``gpus`` ranks (CFG-parallel splits them in 2;
    ``cfg``: include it, i.e. a stage runs with CFG)."""
    setups = {"one GPU": ParallelConfig(),
              "FSDP": ParallelConfig(fsdp=True, replicas=gpus),
              "CP": ParallelConfig(cp_size=gpus),
              "CP + FSDP": ParallelConfig(cp_size=gpus, fsdp=True)}  # fmt: skip
    if cfg and gpus % 2 == 0:
        setups["CFG"] = ParallelConfig(cp_size=gpus // 2, cfg_parallel=True)
        setups["CFG + FSDP"] = ParallelConfig(cp_size=gpus // 2, cfg_parallel=True, fsdp=True)
    return setups


def parallel_table(gpus: int = 8, **kwargs) -> str:
    """Per-rank GiB of each parallel setup on ``gpus`` ranks: DiT load (host, device), the run's peak, and which cards fit.

    ``kwargs`` are the other :class:`PlanConfig` fields (resolution, duration, cfg_rows, card...).
    """
    cards = "  ".join(f"{c}GB" for c in CARDS_GB)
    lines = [f"{'setup':<14}{'label':<16}{'ranks':>5}{'load host':>10}{'load dev':>9}{'peak':>7}  "
             f"{'stage':<14}{cards}"]  # fmt: skip
    with_cfg = kwargs.get("cfg_rows", 1) == 2 or kwargs.get("sr_cfg_rows", 1) == 2
    for name, parallel in parallel_setups(gpus, with_cfg).items():
        p = plan(PlanConfig.from_runtime(OFFLOAD_PRESETS["none"], QuantConfig(), parallel, **kwargs))
        fits = ("yes" if plan(replace(p.config, card=c)).fits else "no" for c in CARDS_GB)
        verdicts = "  ".join(f"{f:>{len(str(c)) + 2}}" for f, c in zip(fits, CARDS_GB))
        lines.append(f"{name:<14}{parallel.label:<16}{parallel.world_size:>5}{p.load.host / GIB:>10.1f}"
                     f"{p.load.device / GIB:>9.1f}{p.peak.total / GIB:>7.1f}  {p.peak.name:<14}{verdicts}")  # fmt: skip
    return "\n".join(lines)


@cli_errors("magihuman-plan")
def main(argv: Sequence[str] | None = None) -> int:
    """``magihuman-plan [table | parallel gpus=N] key=value ...``: print the plan (or a table) and return 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["table"]:
            cfg = parse_args(args[1:])
            print(table(cfg.duration, cfg_rows=cfg.cfg_rows, text_tokens=cfg.text_tokens))
        elif args[:1] == ["parallel"]:
            gpus = [int(a.removeprefix("gpus=")) for a in args[1:] if a.startswith("gpus=")]
            print(parallel_table(gpus[-1] if gpus else 8, **parse_values([a for a in args[1:] if a[:5] != "gpus="])))
        else:
            print(plan(parse_args(args)).summary())
    except ValueError as e:
        print(f"magihuman-plan: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
