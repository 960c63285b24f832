"""Peak GPU memory of a generation run, measured on the real modules before anything loads.

``magihuman-plan resolution=1080p duration=5 card=24 offload=layer quant=int8`` composes the same
Hydra config as ``magihuman-generate`` (``configs/plan.yaml`` adds ``card``, ``margin`` and the
table modes) and prints the peak of every stage (text encode, base DiT, SR DiT, video decode,
audio decode) and whether the run fits the card. No checkpoint is read: every component is
built from its architecture (:mod:`magihuman.components.arch`) on the meta device, and

- **weights** are the bytes of the built modules' parameters and buffers (the DiTs quantized
  by :func:`magihuman.model.quant.quantize`, which runs on meta). Which of them sit on the GPU
  in each stage follows the pipeline's placement: ``offload=none`` keeps every component
  loaded so far, ``model`` only the active one, ``layer`` keeps the decoders and streams the DiT
  and text-encoder layers (the outer weights plus the heaviest window of ``resident_layers``
  consecutive layers of the running model; a model that has run keeps the ``resident_layers - 1``
  layers it prefetched for a next forward).
- **activations** are measured by running the stage's own code (the text encoder's forward, the
  sampler loop over ``dit_velocity``, the configured video decoder's ``decode``, the audio VAE's
  decode) on fake tensors (``FakeTensorMode``, CPU device: the dispatcher picks the kernels a
  real run picks, e.g. flash SDPA holding O(L)) under :class:`LiveTensorBytes`. Only one DiT
  forward per stage really runs; the sampler's other steps replay its measured peak.

Analytic on purpose: the token counts (:mod:`magihuman.clip`); context parallelism (the
Ulysses exchange needs a process group: a rank's activations are the measured ones over
``cp``, plus the exchanged q/k/v and output); fp8 activations
(``torch._scaled_mm`` runs on CUDA only: measured with the bf16 linears, whose input cast is
larger than fp8's). Not counted: allocator fragmentation and the CUDA context (``margin`` and
``CUDA_CONTEXT_BYTES``). Sizes are GiB (2**30 bytes); a "24 GB" card is taken as 24 GiB.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from magihuman.cli.errors import cli_errors
from magihuman.clip import BASE_SIZE, DEFAULT_TEXT_TOKENS, PATCH, SampleTokens, clip_shape, clip_tokens, latent_size
from magihuman.clip import resolution as lookup_resolution
from magihuman.components.arch import ReleaseArch, build_dit, random_components, release_arch
from magihuman.components.text_encoder import MAX_TEXT_TOKENS
from magihuman.configs import build_group
from magihuman.model.dit import DiTConfig, ForwardOptions
from magihuman.model.offload import OffloadConfig, enable_tiled_decode
from magihuman.model.quant import QuantMode, quantize
from magihuman.parallel import ParallelConfig
from magihuman.parallel.context import kv_replicas
from magihuman.sampling import SamplerConfig, SRConfig, make_denoise, sample, sample_sr
from magihuman.sampling.velocity import dit_velocity

GIB = 2**30
CARDS_GB = (24, 40, 80, 141)
CUDA_CONTEXT_BYTES = GIB  # CUDA context + cuBLAS/cuDNN workspaces, outside the caching allocator
HOST = torch.device("cpu")  # the fake tensors' device: CPU kernel choices, no allocation


# ---------------------------------------------------------------------------------------
# The meter.


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created while active and still alive (any device, CPU included).

    Every op's new output storages are recorded with a weak reference; a storage counts until
    it is freed. Storages that existed before (weights, inputs) never count, views never
    count twice, meta placeholders (an offloaded module's) hold nothing and are skipped. Call
    :meth:`reset_peak` to start a new peak from what is live now.
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
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in inputs and ref.cdata not in self._live:
                    self._live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


# ---------------------------------------------------------------------------------------
# Fake tensors: the real code over shapes only.


class FakeDevice:
    """Meta-built modules and inputs as fake CPU tensors of one ``FakeTensorMode``."""

    def __init__(self) -> None:
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)  # host-made index tensors (coords) mix in

    def tensor(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.mode.fake_tensor_converter.from_meta_and_device(
            self.mode, torch.empty(shape, dtype=dtype, device="meta"), HOST
        )

    def module(self, module: nn.Module) -> nn.Module:
        """Swap every meta parameter and buffer for a fake one (in place; returns ``module``)."""
        convert = self.mode.fake_tensor_converter.from_meta_and_device
        for owner in module.modules():
            for name, p in owner._parameters.items():
                if p is not None:
                    owner._parameters[name] = nn.Parameter(convert(self.mode, p, HOST), requires_grad=False)
            for name, b in owner._buffers.items():
                if b is not None:
                    owner._buffers[name] = convert(self.mode, b, HOST)
        return module


def measure(run: Callable[[], object]) -> int:
    """Peak live bytes created by ``run()`` (its own inputs excluded)."""
    with torch.inference_mode(), LiveTensorBytes() as meter:
        result = run()
    del result
    return meter.peak


_MEASURED: dict[tuple, object] = {}


def memo(key: tuple, compute: Callable[[], object]):
    """One measurement per (module configuration, shapes): a table measures each once."""
    if key not in _MEASURED:
        _MEASURED[key] = compute()
    return _MEASURED[key]


# ---------------------------------------------------------------------------------------
# Weights.


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@dataclass(frozen=True)
class ModelWeights:
    """A module's weight bytes: all of it, and the split layer streaming sees (outer + per layer)."""

    total: int
    layers: tuple[int, ...] = ()

    @property
    def outer(self) -> int:
        return self.total - sum(self.layers)

    def streamed(self, resident_layers: int) -> int:
        """While it runs with layer streaming: the outer weights plus the heaviest run of
        ``resident_layers`` consecutive layers (the prefetch wraps to the next forward's first)."""
        n = min(resident_layers, len(self.layers))
        return self.outer + max(sum(self.layers[(i + j) % len(self.layers)] for j in range(n))
                                for i in range(len(self.layers)))  # fmt: skip

    def prefetched(self, resident_layers: int) -> int:
        """After it has run: the outer weights and the first layers prefetched for a next forward."""
        return self.outer + sum(self.layers[: min(resident_layers, len(self.layers)) - 1])

    @classmethod
    def of(cls, module: nn.Module, layers: nn.ModuleList | None = None) -> ModelWeights:
        return cls(tensor_bytes(module), tuple(tensor_bytes(layer) for layer in layers or ()))


def dit_weights(config: DiTConfig, quant: QuantMode = "none") -> ModelWeights:
    """The DiT built on meta and quantized as configured: what it stores, by layer."""

    def count() -> ModelWeights:
        model = quantize(build_dit(config, "meta"), quant)
        return ModelWeights.of(model, model.block.layers)

    return memo(("dit_weights", config, quant), count)


def largest_tensor_bytes(config: DiTConfig) -> int:
    """Bytes of the DiT's largest stored tensor (unquantized): what one FSDP shard's load holds in flight."""
    def largest() -> int:
        return max(t.numel() * t.element_size() for t in build_dit(config, "meta").state_dict().values())

    return memo(("largest", config), largest)


@dataclass(frozen=True)
class ComponentWeights:
    text_encoder: ModelWeights  # streamed by layer under offload=layer
    video_vae: int  # Wan2.2 (encodes images; decodes when decoder=wan)
    turbo: int  # the turbo decoder
    audio_vae: int


def component_weights(arch: ReleaseArch, dtype: torch.dtype) -> ComponentWeights:
    def count() -> ComponentWeights:
        c = random_components(arch, "meta", dtype)
        encoder = c.text_encoder.model
        return ComponentWeights(ModelWeights.of(encoder, encoder.encoder.layers), tensor_bytes(c.video_vae.model),
                                tensor_bytes(c.video_decoder.model), tensor_bytes(c.audio_vae.model))  # fmt: skip

    return memo(("components", arch.name, dtype), count)


# ---------------------------------------------------------------------------------------
# Activations, measured on fake tensors.


def text_encode_bytes(arch: ReleaseArch, dtype: torch.dtype, tokens: int = MAX_TEXT_TOKENS) -> int:
    """The text encoder's forward over ``tokens`` (its 640-token cap by default).

    No attention mask: a single prompt's mask is all ones, which the encoder skips anyway
    (checking it is a host read a fake tensor cannot answer).
    """

    def run() -> int:
        fake = FakeDevice()
        model = fake.module(random_components(arch, "meta", dtype).text_encoder.model)
        ids = fake.tensor(1, tokens, dtype=torch.long)
        return measure(lambda: model(input_ids=ids).last_hidden_state.to(torch.float16).to(torch.float32))

    return memo(("text", arch.name, dtype, tokens), run)


@dataclass(frozen=True)
class DenoiseStage:
    """One DiT stage: the model, its sampler, and the packed rows of one forward."""

    name: str
    dit: DiTConfig
    sampler: SamplerConfig
    tokens: SampleTokens  # the cond row
    rows: int  # rows per forward (2: cond + uncond batched for CFG)
    negative_tokens: int  # the uncond row's text tokens (the negative prompt's)
    sr: SRConfig | None = None  # the SR stage's settings (it starts from upsampled base latents)


LAYER_KINDS = ("mm_layers", "gelu7_layers", "local_attn_layers", "post_norm_layers")  # DiTConfig's per-layer choices


def distinct_layers(config: DiTConfig) -> DiTConfig:
    """The DiT with one layer of each kind ``config`` has (expert or shared, gelu7 or swiglu7, local or
    full attention, post-norm or not). Layers of one kind run the same ops on the same shapes and a
    forward's peak is one layer's, so this measures what the whole stack does, in a fraction of the time."""
    kinds = sorted({tuple(i in getattr(config, name) for name in LAYER_KINDS) for i in range(config.num_layers)})
    chosen = {name: tuple(j for j, kind in enumerate(kinds) if kind[k]) for k, name in enumerate(LAYER_KINDS)}
    return replace(config, num_layers=len(kinds), **chosen)


def denoise_bytes(stage: DenoiseStage, quant: QuantMode, chunk: int | None, attn_dtype: torch.dtype,
                  text_channels: int) -> int:  # fmt: skip
    """Peak of one denoise stage: the sampler loop over the DiT velocity, with its latents and texts.

    The first call runs the real forward (packing the rows, building the layout, the layers);
    later calls replay its measured peak above what stays alive, so a stage costs one forward.
    """

    def run() -> int:
        fake = FakeDevice()
        codes = quant if quant != "fp8" else "none"  # fp8 matmuls run on CUDA only: bf16 activations stand in
        model = fake.module(quantize(build_dit(distinct_layers(stage.dit), "meta"), codes))
        options = ForwardOptions(attn_dtype=attn_dtype, mlp_chunk_tokens=chunk)  # as the pipeline passes them
        t, grid_h, grid_w = stage.tokens.grid
        h, w = grid_h * PATCH[1], grid_w * PATCH[2]  # the latent's size, before the 2x2 patch
        channels = stage.dit.video_in_channels // (PATCH[1] * PATCH[2])  # latent channels, before the 2x2 patch
        meter = LiveTensorBytes()
        with torch.inference_mode(), meter:
            lengths = (stage.tokens.num_text, stage.negative_tokens)[: stage.rows]
            texts = [fake.tensor(n, text_channels) for n in lengths]
            velocity = dit_velocity(model, texts, "v1" if stage.sr else "v2", device=HOST, options=options)
            replay = Replay(velocity, meter, anchor=texts[0])
            sampler = replace(stage.sampler, progress=False)
            audio = fake.tensor(1, stage.tokens.num_audio, stage.dit.audio_in_channels)
            if stage.sr is None:
                video = fake.tensor(1, channels, t, h, w)
                sample(sampler, make_denoise(sampler, replay), video, audio, generator=torch.Generator())
            else:
                base = fake.tensor(1, channels, t, *latent_size(*reversed(BASE_SIZE)))
                sr = replace(stage.sr, sampler=sampler)
                sample_sr(sr, make_denoise(sampler, replay), base, audio, (t, h, w), generator=torch.Generator())
        return meter.peak

    return memo(("denoise", repr(stage), quant, chunk, attn_dtype, text_channels), run)


class Replay:
    """A velocity that runs the real one once, then reproduces its memory: the peak above its
    entry (less what stayed alive: the packed template and layout) and fresh outputs.

    The replayed tensors are made from ``anchor`` (a fake tensor): fake too, so nothing is
    allocated, yet made by ops the meter sees.
    """

    def __init__(self, velocity, meter: LiveTensorBytes, anchor: Tensor):
        self.velocity, self.meter, self.anchor = velocity, meter, anchor
        self.working: int | None = None

    def __call__(self, video: Tensor, audio: Tensor, sigma: float):
        entry = self.meter.live_bytes()
        if self.working is None:
            outer_peak, self.meter.peak = self.meter.peak, entry
            out = self.velocity(video, audio, sigma)
            kept = self.meter.live_bytes() - entry - sum(tensor.untyped_storage().nbytes() for tensor in out)
            self.working = self.meter.peak - entry - kept
            self.meter.peak = max(self.meter.peak, outer_peak)
            return out
        outputs = tuple(self.anchor.new_empty(x.shape, dtype=x.dtype) for x in (video, audio))
        size = self.working - sum(x.untyped_storage().nbytes() for x in outputs)
        transient = self.anchor.new_empty((max(size, 0),), dtype=torch.uint8)
        del transient  # freed at once: only its peak counts
        return outputs


def video_decode_bytes(arch: ReleaseArch, decoder: str, tiled: bool, latent: tuple[int, int, int, int],
                       dtype: torch.dtype) -> int:  # fmt: skip
    """The configured decoder's ``decode`` of a ``[48, T, h, w]`` latent (its input excluded).

    Slow spot: the Wan2.2 decode loops over latent frames (and, tiled, over every tile), so a
    fake 1080p run takes seconds untiled and minutes tiled; the turbo decoder (the default) is
    quick. Each is measured once per shape.
    """

    def run() -> int:
        fake = FakeDevice()
        video = random_components(arch, "meta", dtype, decoder=decoder).video_decoder
        fake.module(video.model)
        if tiled and decoder == "wan":
            enable_tiled_decode(video)
        z = fake.tensor(*latent)
        return measure(lambda: video.decode(z))

    return memo(("decode", arch.name, decoder, tiled and decoder == "wan", latent, dtype), run)


def audio_decode_bytes(arch: ReleaseArch, num_audio: int) -> int:
    """The audio VAE's decode to its own rate (fp32, as the pipeline runs it)."""

    def run() -> int:
        fake = FakeDevice()
        vae = random_components(arch, "meta", torch.float32).audio_vae
        fake.module(vae.model)
        return measure(lambda: vae.decode_vae_rate(fake.tensor(num_audio, vae.latent_dim)))

    return memo(("audio", arch.name, num_audio), run)


# ---------------------------------------------------------------------------------------
# What is planned: a run as generate is configured.


@dataclass(frozen=True)
class PlanConfig:
    """One run to plan: what ``magihuman-plan`` reads off the composed generate config."""

    arch: ReleaseArch
    resolution: str = "256p"
    duration: float = 5
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    quant: QuantMode = "none"
    decoder: str = "turbo"
    sampler: SamplerConfig = field(default_factory=lambda: build_group("sampler", "dmd"))
    sr: SRConfig = field(default_factory=lambda: build_group("sr", "default"))
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    card: float = 24  # GiB
    margin: float = 0.10  # share of the card kept free for allocator fragmentation
    text_tokens: int = DEFAULT_TEXT_TOKENS  # the prompt's tokens the DiT sees
    negative_tokens: int | None = None  # the uncond row's (CFG); None: as many as the prompt
    encoder_tokens: int = MAX_TEXT_TOKENS  # what the text encoder runs over
    device: str = "cuda"  # the dtypes planned for: cuda (bf16 components and attention) or cpu (fp32)

    def __post_init__(self) -> None:
        lookup_resolution(self.resolution)
        if self.decoder not in ("turbo", "wan"):
            raise ValueError(f"decoder must be turbo or wan, got {self.decoder!r}")
        if self.parallel.fsdp and (self.quant != "none" or self.offload.mode != "none"):
            raise ValueError("fsdp runs with quant=none and offload=none only (as the pipeline)")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PlanConfig:
        """The plan of the run ``cfg`` (a composed ``generate.yaml``, plus ``card`` and ``margin``) configures."""
        from hydra.utils import instantiate

        sr = instantiate(cfg.sr)
        return cls(
            arch=release_arch(OmegaConf.select(cfg, "model.dit_arch") or "tiny"),
            resolution=cfg.resolution.name,
            duration=float(cfg.duration),
            offload=instantiate(cfg.offload),
            quant=instantiate(cfg.quant).mode,
            decoder=cfg.decoder,
            sampler=instantiate(cfg.sampler),
            sr=sr,
            parallel=instantiate(cfg.parallel),
            card=float(cfg.get("card", 24)),
            margin=float(cfg.get("margin", 0.10)),
        )

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    @property
    def uncond_tokens(self) -> int:
        return self.text_tokens if self.negative_tokens is None else self.negative_tokens

    def stages(self) -> list[DenoiseStage]:
        """The DiT stages of the resolution, each on one rank group (CFG rows split under cfg_parallel)."""
        res = lookup_resolution(self.resolution)
        stages = [DenoiseStage("base_denoise", self.arch.dits["base"], self.sampler,
                               clip_tokens(self.duration, *reversed(res.base_size), self.text_tokens),
                               self.sampler.cfg_passes, self.uncond_tokens)]  # fmt: skip
        if res.sr_model is not None:
            stages.append(DenoiseStage("sr_denoise", self.arch.dits[res.sr_model], self.sr.sampler,
                                       clip_tokens(self.duration, *reversed(res.sr_size), self.text_tokens),
                                       self.sr.sampler.cfg_passes, self.uncond_tokens, self.sr))  # fmt: skip
        return stages


# ---------------------------------------------------------------------------------------
# The plan.


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
class LoadPeak:
    """What one rank holds at the peak of loading a DiT (bytes)."""

    host: int
    device: int


@dataclass(frozen=True)
class Plan:
    config: PlanConfig
    stages: tuple[StagePeak, ...]
    load: LoadPeak

    @property
    def peak(self) -> StagePeak:
        return max(self.stages, key=lambda s: s.total)

    def usable_bytes(self, card: float | None = None) -> float:
        """What the caching allocator may hand out on the card, after the context and margin."""
        return ((card or self.config.card) * GIB - CUDA_CONTEXT_BYTES) * (1 - self.config.margin)

    def fits(self, card: float | None = None) -> bool:
        return self.peak.total <= self.usable_bytes(card)

    def summary(self) -> str:
        c = self.config
        o = c.offload
        lines = [
            f"{c.arch.name} {c.resolution} {c.duration:g}s  offload={o.mode}"
            + (f"(resident_layers={o.resident_layers})" if o.mode == "layer" else "")
            + f"  quant={c.quant}  decoder={c.decoder}"
            + ("  vae_tiling" if o.vae_tiling and c.decoder == "wan" else "")
            + (f"  mlp_chunk_tokens={o.mlp_chunk_tokens}" if o.mlp_chunk_tokens else "")
            + f"  parallel={c.parallel.label}",
            f"  {'stage':<14}{'weights':>10}{'working':>10}{'total':>10}  GiB",
        ]
        for s in self.stages:
            sizes = "".join(f"{b / GIB:>10.2f}" for b in (s.weights, s.working, s.total))
            lines.append(f"  {s.name:<14}{sizes}  {s.detail}")
        verdict = "fits" if self.fits() else "does NOT fit"
        lines.append(
            f"  peak {self.peak.total / GIB:.2f} GiB ({self.peak.name}) {verdict} a {c.card:g} GiB card "
            f"(usable {self.usable_bytes() / GIB:.2f} GiB after {CUDA_CONTEXT_BYTES / GIB:.0f} GiB context "
            f"and a {c.margin:.0%} margin)"
        )
        where = "(each rank reads only its shard)" if c.parallel.fsdp else "(the whole checkpoint)"
        lines.append(f"  DiT load per rank: host {self.load.host / GIB:.2f} GiB, "
                     f"device {self.load.device / GIB:.2f} GiB {where}")  # fmt: skip
        return "\n".join(lines)


def _dit_resident(weights: ModelWeights, config: PlanConfig) -> int:
    """DiT weights on one rank while it runs."""
    if config.offload.mode == "layer":
        return weights.streamed(config.offload.resident_layers)
    if config.parallel.fsdp:  # own shard of everything plus two gathered layers (current + prefetch)
        return weights.total // config.parallel.world_size + weights.streamed(2)
    return weights.total


def _context_parallel(working: int, stage: DenoiseStage, config: PlanConfig) -> int:
    """One rank's share under Ulysses context parallelism (analytic: the exchange needs a process
    group): the measured activations over ``cp``, plus bf16 q/k/v and output in both layouts."""
    cp = config.parallel.cp_size
    if cp == 1:
        return working
    d = stage.dit
    kv = d.num_query_groups * kv_replicas(d.num_heads, d.num_query_groups, cp)
    tokens = math.ceil(stage.rows * stage.tokens.length / cp)
    return math.ceil(working / cp) + 4 * 2 * (d.num_heads + 2 * kv) * d.head_dim * tokens


def plan(config: PlanConfig) -> Plan:
    """Predicted peak of every stage of one generation on one GPU (one rank)."""
    arch, offload, dtype = config.arch, config.offload, config.dtype
    parts = component_weights(arch, dtype)
    decoder = parts.turbo if config.decoder == "turbo" else parts.video_vae
    vaes = parts.video_vae + parts.audio_vae + (parts.turbo if config.decoder == "turbo" else 0)
    text = parts.text_encoder
    mode, r = offload.mode, offload.resident_layers
    always = {"none": text.total + vaes, "model": 0, "layer": vaes}[mode]  # on the device from the start

    text_on_gpu = {"none": always, "model": text.total, "layer": always + text.streamed(r)}[mode]
    stages = [StagePeak("text_encode", text_on_gpu, text_encode_bytes(arch, dtype, config.encoder_tokens),
                        f"{config.encoder_tokens} tokens")]  # fmt: skip
    kept = always + (text.prefetched(r) if mode == "layer" else 0)  # loaded DiTs add to this (none, layer)
    loads = []
    attn_dtype = torch.bfloat16 if config.device == "cuda" else torch.float32
    for stage in config.stages():
        weights = dit_weights(stage.dit, config.quant)
        rows = 1 if config.parallel.cfg_parallel else stage.rows
        run = replace(stage, rows=rows)
        text_channels = arch.dits["base"].text_in_channels
        working = denoise_bytes(run, config.quant, offload.mlp_chunk_tokens, attn_dtype, text_channels)
        working = _context_parallel(working, run, config)
        resident = _dit_resident(weights, config)
        on_gpu = {"none": kept + resident, "model": resident, "layer": kept + resident}[mode]
        share = f" / cp {config.parallel.cp_size}" if config.parallel.cp_size > 1 else ""
        stages.append(StagePeak(stage.name, on_gpu, working, f"{stage.tokens.length} tokens x{rows} rows{share}"))
        kept += {"none": resident, "model": 0, "layer": weights.prefetched(r)}[mode]
        loads.append(dit_load(stage.dit, weights, config))

    res = lookup_resolution(config.resolution)
    h, w = res.dit_size
    shape = clip_shape(config.duration)
    channels = arch.dits["base"].video_in_channels // (PATCH[1] * PATCH[2])
    latent = (channels, shape.latent_frames, *latent_size(w, h))
    tiled = offload.vae_tiling and config.decoder == "wan"
    # the final latents (fp32) stay on the device through both decodes
    carried = 4 * (math.prod(latent) + shape.num_audio * arch.dits["base"].audio_in_channels)
    on_gpu = kept if mode != "model" else decoder
    decode = video_decode_bytes(arch, config.decoder, tiled, latent, dtype)
    stages.append(StagePeak("video_decode", on_gpu, carried + decode,
                            f"{config.decoder} {w}x{h}" + (" tiled" if tiled else "")))  # fmt: skip
    on_gpu = kept if mode != "model" else parts.audio_vae
    stages.append(StagePeak("audio_decode", on_gpu, carried + audio_decode_bytes(arch, shape.num_audio), "fp32"))
    load = LoadPeak(max(x.host for x in loads), max(x.device for x in loads))
    return Plan(config, tuple(stages), load)


def dit_load(dit: DiTConfig, weights: ModelWeights, config: PlanConfig) -> LoadPeak:
    """Host and device bytes one rank holds while one DiT loads.

    With FSDP each rank reads only its rows of every tensor straight into its shard on the
    device (:func:`magihuman.parallel.fsdp.load_sharded`): the device holds its 1/P, the host
    one tensor's rows in flight. Otherwise the whole checkpoint is read on the host (memory
    mapped), quantized there, and copied to the device (kept on the host under offload).
    """
    world = config.parallel.world_size
    if config.parallel.fsdp:
        return LoadPeak(-(-largest_tensor_bytes(dit) // world), -(-weights.total // world))
    return LoadPeak(dit_weights(dit).total, weights.total if config.offload.mode == "none" else 0)


# ---------------------------------------------------------------------------------------
# Tables: the same plan over Hydra's own config groups.


def group_options(group: str) -> list[str]:
    """The options of a config group (``configs/<group>/*.yaml``), as Hydra lists them."""
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader().get_group_options(group)


def compose_plan(overrides: Sequence[str]) -> PlanConfig:
    """The :class:`PlanConfig` of ``configs/plan.yaml`` with ``overrides`` (Hydra must be initialized)."""
    from hydra import compose

    return PlanConfig.from_config(compose("plan", overrides=list(overrides)))


def _verdicts(p: Plan) -> str:
    return "  ".join(f"{'yes' if p.fits(c) else 'no':>{len(str(c)) + 2}}" for c in CARDS_GB)


def table(overrides: Sequence[str], resolutions: Sequence[str]) -> str:
    """Peak GiB per resolution x offload x quant (the groups' YAMLs), and which cards each fits."""
    cards = "  ".join(f"{c}GB" for c in CARDS_GB)
    lines = [f"{'resolution':<11}{'offload':<8}{'quant':<6}{'peak GiB':>9}  stage         {cards}"]
    for res in resolutions:
        for offload in group_options("offload"):
            for quant in group_options("quant"):
                p = plan(compose_plan([*overrides, f"resolution={res}", f"offload={offload}", f"quant={quant}"]))
                peak = f"{p.peak.total / GIB:>9.2f}  {p.peak.name:<14}"
                lines.append(f"{res:<11}{offload:<8}{quant:<6}{peak}{_verdicts(p)}")
    return "\n".join(lines)


def parallel_overrides(option: str, gpus: int) -> list[str] | None:
    """``configs/parallel/<option>.yaml`` sized for ``gpus`` ranks (its comment says how), or None
    where it cannot be (CFG parallel on an odd count)."""
    from hydra import compose

    p = compose("plan", overrides=[f"parallel={option}"]).parallel
    if p.cfg_parallel and gpus % 2:
        return None
    if p.cp_size > 1 or p.cfg_parallel:  # the sequence over the ranks a CFG half leaves
        return [f"parallel={option}", f"parallel.cp_size={gpus // (2 if p.cfg_parallel else 1)}"]
    if p.fsdp:  # FSDP alone: every rank runs the same generation
        return [f"parallel={option}", f"parallel.replicas={gpus}"]
    return [f"parallel={option}"]


def parallel_table(overrides: Sequence[str], gpus: int) -> str:
    """Per-rank GiB of each ``configs/parallel`` setup sized for ``gpus`` ranks: DiT load (host,
    device), peak, cards."""
    cards = "  ".join(f"{c}GB" for c in CARDS_GB)
    lines = [f"{'setup':<10}{'label':<16}{'ranks':>5}{'load host':>10}{'load dev':>9}{'peak':>7}  {'stage':<14}{cards}"]
    for option in group_options("parallel"):
        sized = parallel_overrides(option, gpus)
        if sized is None:
            continue
        p = plan(compose_plan([*overrides, *sized]))
        parallel = p.config.parallel
        lines.append(f"{option:<10}{parallel.label:<16}{parallel.world_size:>5}{p.load.host / GIB:>10.1f}"
                     f"{p.load.device / GIB:>9.1f}{p.peak.total / GIB:>7.1f}  "
                     f"{p.peak.name:<14}{_verdicts(p)}")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# CLI.

CONFIG_PATH = "pkg://magihuman.configs"


def run(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """What ``magihuman-plan`` prints for the composed ``cfg`` (``overrides``: the command line's)."""
    mode = cfg.plan.mode
    rows = [o for o in overrides if not o.startswith(("plan.", "resolution=", "offload=", "quant="))]
    if mode == "single":
        return plan(PlanConfig.from_config(cfg)).summary()
    if mode == "table":
        return table(rows, list(cfg.plan.resolutions))
    if mode == "parallel":
        return parallel_table([o for o in overrides if not o.startswith(("plan.", "parallel"))], int(cfg.plan.gpus))
    raise ValueError(f"plan.mode must be single, table or parallel, got {mode!r}")


@cli_errors("magihuman-plan")
def main(argv: Sequence[str] | None = None) -> int:
    """``magihuman-plan [key=value ...]`` (Hydra overrides of configs/plan.yaml): print the plan or a table.

    Exit 0, or 2 with one line on stderr for a bad option.
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        with initialize_config_module("magihuman.configs", version_base="1.3"):
            cfg = compose("plan", overrides=overrides)
            print(run(cfg, overrides))
    except (ValueError, HydraException, OmegaConfBaseException) as error:
        print(f"magihuman-plan: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
