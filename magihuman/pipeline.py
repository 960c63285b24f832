"""Text (+ image, + speech) -> base DiT -> optional SR DiT -> decode -> mp4 with audio.

The unconditional pass uses the release's fixed negative prompt (``negative_prompt.txt``,
from the Apache-2.0 daVinci-MagiHuman inference code), encoded once per pipeline.

This is the only module that knows the order of the stages. Each stage is timed (see
:mod:`magihuman.timing`). Where weights live is configurable (the base and SR models are
30.6 GB each in bf16): ``offload`` keeps only the active component on the GPU (``model``)
or streams DiT and text-encoder layers through it (``layer``); ``quant`` stores the DiT
linears in int8 / fp8; ``parallel`` spreads one generation over torchrun ranks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from . import inputs
from .clip import FPS, FRAME_RECEPTIVE_FIELD, ClipShape, Resolution, clip_shape
from .clip import resolution as lookup_resolution
from .components import (
    VIDEO_DECODERS,
    OobleckAudioVAE,
    ReleaseLayout,
    T5GemmaTextEncoder,
    TurboVideoDecoder,
    WanVideoVAE,
    load_components,
)
from .components.arch import build_dit, random_components, release_arch
from .components.tiny import ensure_tiny_release
from .configs import build_group
from .inputs import LOCAL_FILES, FilePolicy
from .media import image_to_tensor, load_audio, load_image, pixels_to_frames, resize_crop, resize_frames, write_mp4
from .model import DiT
from .model.checkpoint import build_and_load, verify_checkpoint
from .model.dit import DiTConfig
from .model.offload import ModelOffloader, OffloadConfig, enable_tiled_decode, stream_layers
from .model.quant import QuantConfig, quantize
from .model.runtime import RuntimeConfig, apply_runtime, check_runtime
from .parallel import ParallelConfig, ParallelState, init_distributed, load_sharded, parallel_velocity, parallelize
from .sampling import (
    Constraint,
    FixedAudio,
    ImageFirstFrame,
    SamplerConfig,
    SRConfig,
    make_denoise,
    sample,
    sample_sr,
)
from .sampling.guidance import Velocity
from .sampling.velocity import dit_velocity
from .stages import AUDIO_DECODE, AUDIO_ENCODE, BASE_DENOISE, IMAGE_ENCODE, MUX, SR_DENOISE, TEXT_ENCODE, VIDEO_DECODE
from .timing import PeakMemory, StageTimer

NEGATIVE_PROMPT_FILE = Path(__file__).with_name("negative_prompt.txt")
A2V_AUDIO_MODES = ("pinned", "renoised")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the one request type at the pipeline boundary (the API, the command line and
    the sweep build one). :meth:`MagiHumanPipeline.check_inputs` validates it and reads its media."""

    prompt: str
    image: Path | bytes | None = None  # a file, or its bytes; checked requests carry the bytes read once
    audio: Path | bytes | None = None
    duration: float = 5.0  # seconds, a whole number of 25 fps frames
    resolution: str = "256p"
    sampler: SamplerConfig = field(default_factory=lambda: build_group("sampler", "dmd"))  # .dit: the base-stage DiT
    seed: int | None = None
    # A2V with the distilled (single-pass DMD) sampler: keep the given speech latents fixed
    # ("pinned": the hosted API promises lip-sync to the given speech) or re-noise them like the
    # video after the first step ("renoised": the release's distilled path, which regenerates the
    # audio). The base (CFG) and SR paths always keep the given audio.
    distilled_a2v_audio: Literal["pinned", "renoised"] = "pinned"

    def __post_init__(self) -> None:
        if self.distilled_a2v_audio not in A2V_AUDIO_MODES:
            raise ValueError(f"distilled_a2v_audio must be one of {A2V_AUDIO_MODES}, got {self.distilled_a2v_audio!r}")


@dataclass
class GenerationResult:
    path: Path | None
    seed: int
    video_latent: Tensor  # [48, T, h, w] after the last DiT stage
    audio_latent: Tensor  # [Na, 64] from the base stage
    duration: float  # seconds of the clip (frames / fps): shorter than asked when the A2V speech is
    frames: np.ndarray  # [F, H, W, 3] uint8
    waveform: np.ndarray  # [channels, samples] float32 at ``sample_rate``
    sample_rate: int
    timings: dict[str, float]
    step_times: dict[str, list[float]]
    peak_memory_bytes: int
    dit_calls: dict[str, DiTCalls]  # per denoise stage: what the DiT ran (for FLOP accounting)


@dataclass
class DiTCalls:
    """The DiT work of one denoise stage: ``forwards`` calls, each over ``rows`` packed samples."""

    config: DiTConfig
    grid: tuple[int, int, int]  # video patch grid (T, H/2, W/2) of one sample
    num_audio: int
    num_text: tuple[int, ...]  # text tokens per row (cond, then uncond)
    receptive_field: int
    forwards: int = 0


class NonFiniteLatentsError(FloatingPointError):
    """Latents became NaN / inf in a denoise stage (NaN weights, an unstable setting); the
    message names the stage, the step and the settings, instead of a broken mp4 later."""


class FiniteWatch:
    """A velocity wrapper that notes the first denoise step whose input latents are not finite.

    No host sync per step: the flag and the step index stay on the device (a few tiny kernels
    per step) and are read once, by :meth:`check` at the end of the stage. The input of call
    ``k`` is the latents after step ``k`` (each sampler step makes one denoise call); the
    stage's final latents are checked there too.
    """

    NONE = 2**31 - 1  # "no bad step yet"

    def __init__(self, velocity: Velocity):
        self.velocity = velocity
        self.calls = 0
        self.first_bad: Tensor | None = None

    def __call__(self, video: Tensor, audio: Tensor, *args):
        bad = ~(torch.isfinite(video).all() & torch.isfinite(audio).all())
        step = torch.where(bad, self.calls, self.NONE)
        self.first_bad = step if self.first_bad is None else torch.minimum(self.first_bad, step)
        self.calls += 1
        return self.velocity(video, audio, *args)

    def check(self, video: Tensor, audio: Tensor, stage: str, sampler: SamplerConfig, request, seed: int) -> None:
        """Raise :class:`NonFiniteLatentsError` if any step of the stage left non-finite latents."""
        step = self.NONE if self.first_bad is None else int(self.first_bad.item())  # the stage's one sync
        if step == self.NONE and not (torch.isfinite(video).all() and torch.isfinite(audio).all()):
            step = self.calls
        if step == self.NONE:
            return
        where = "in the initial latents" if step == 0 else f"after step {step} of {self.calls}"
        guidance = f", guidance_scale={sampler.guidance_scale:g}" if sampler.cfg_passes == 2 else ""
        raise NonFiniteLatentsError(
            f"{stage}: non-finite latents {where} (sampler={sampler.name}, num_steps={sampler.num_steps}{guidance}, "
            f"resolution={request.resolution}, duration={request.duration:g}, seed={seed})"
        )


class MagiHumanPipeline:
    """The generation pipeline over real component classes (tiny or full size)."""

    def __init__(
        self,
        text_encoder: T5GemmaTextEncoder,
        video_vae: WanVideoVAE,
        audio_vae: OobleckAudioVAE,
        dit_loaders: dict[str, Callable[[], DiT]],
        video_decoder: TurboVideoDecoder | WanVideoVAE | None = None,
        device: str | torch.device = "cpu",
        offload: OffloadConfig | None = None,
        quant: QuantConfig | None = None,
        parallel: ParallelState | None = None,
        sr: SRConfig | None = None,
        runtime: RuntimeConfig | None = None,
    ):
        self.offload, self.quant = offload or OffloadConfig(), quant or QuantConfig()
        self.runtime = runtime or RuntimeConfig()
        check_runtime(self.runtime, device, self.quant.mode, self.offload.mode, parallel is not None)
        self.forward_options = self.runtime.forward_options(self.offload.mlp_chunk_tokens)  # how every DiT runs
        self.parallel = parallel
        if parallel is not None and self.offload.mode != "none":
            raise ValueError(f"offload={self.offload.mode} with multi-rank parallel is not supported; use offload=none")
        if parallel is not None and parallel.config.fsdp and self.quant.mode != "none":
            raise ValueError(f"quant={self.quant.mode} with FSDP is not supported: FSDP2 shards parameters, and "
                             "quantized codes are buffers that every rank would hold whole; use quant=none")  # fmt: skip
        self.text_encoder, self.video_vae, self.audio_vae = text_encoder, video_vae, audio_vae
        self.video_decoder = video_decoder or video_vae  # decodes the final latents; None: the Wan2.2 VAE
        self.dit_loaders = dit_loaders
        self.device = torch.device(device)
        self.sr = sr or build_group("sr", "default")
        self._dits: dict[str, nn.Module] = {}
        self._dit_configs: dict[str, DiTConfig] = {}
        self._negative: Tensor | None = None
        self._offloader = ModelOffloader(self.device) if self.offload.mode == "model" else None
        self._place_components()

    def _place_components(self) -> None:
        """Text encoder, VAEs and video decoder: registered for model offload, streamed, or moved to
        the device. ``vae_tiling`` tiles the Wan2.2 decode; the turbo decoder already decodes in windows."""
        parts = {"text_encoder": self.text_encoder.model, "video_vae": self.video_vae.model,
                 "audio_vae": self.audio_vae.model}  # fmt: skip
        if self.video_decoder is not self.video_vae:
            parts["video_decoder"] = self.video_decoder.model
        if self._offloader is not None:
            for name, module in parts.items():
                self._offloader.register(name, module)
            return
        if self.offload.mode == "layer":
            encoder = self.text_encoder.model
            stream_layers(encoder, encoder.encoder.layers, self.device, self.offload.resident_layers)
            del parts["text_encoder"]
        for module in parts.values():
            module.to(self.device)
        if self.offload.vae_tiling:
            enable_tiled_decode(self.video_vae)

    def _activate(self, name: str) -> None:
        if self._offloader is not None:
            self._offloader.activate(name)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str = "tiny", cache_dir: Path | None = None, **kwargs) -> MagiHumanPipeline:
        """``tiny``: every component built small with random weights, written once to the cache
        as real checkpoint directories, then loaded like the real release."""
        if name != "tiny":
            raise ValueError(f"unknown pipeline preset {name!r}; use 'tiny' or from_pretrained(paths) for 'full'")
        _check_options(kwargs)  # before the tiny release is written
        return cls.from_pretrained(ensure_tiny_release(cache_dir), dit_arch="tiny", **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        paths: ReleaseLayout | str | Path,
        dit_arch: str = "full",
        device=None,
        offload: OffloadConfig | None = None,
        parallel: ParallelConfig | None = None,
        decoder: str = "turbo",
        **kwargs,
    ) -> MagiHumanPipeline:
        """Load from checkpoint directories in the release layout; every missing path is named at once.

        ``decoder``: ``turbo`` (the release's default: its distilled decoder in ``turbo_vae/``) or
        ``wan`` (the full Wan2.2 VAE decoder).

        With ``parallel`` over several ranks (launched by torchrun), this joins the job and
        the device is the rank's own.
        """
        _check_options({**kwargs, "device": device, "offload": offload, "parallel": parallel})
        layout = paths if isinstance(paths, ReleaseLayout) else ReleaseLayout(Path(paths))
        dits = {"base": layout.base, "distill": layout.distill, "540p_sr": layout.sr_540p, "1080p_sr": layout.sr_1080p}
        needed = (*dits.values(), layout.video_vae, layout.audio_vae, layout.text_encoder)
        missing = [str(p) for p in needed + ((layout.turbo_vae,) if decoder == "turbo" else ()) if not p.is_dir()]
        if missing:
            raise FileNotFoundError("checkpoint directories missing: " + ", ".join(missing))
        state = None
        if parallel is not None and parallel.world_size > 1:
            state = init_distributed(parallel)
            device = state.device
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        archs = release_arch(dit_arch).dits  # the checkpoints' architectures (components/arch.py)
        for name, config in archs.items():  # headers only: a broken DiT fails before any component loads
            verify_checkpoint(dits[name], config)

        def loader(name: str, config: DiTConfig) -> Callable[[], DiT]:
            if state is not None and state.config.fsdp:  # each rank reads only its shard, onto its device
                return lambda: load_sharded(lambda: DiT(config), dits[name], state.fsdp_mesh, device)
            return lambda: build_and_load(lambda: DiT(config), dits[name], device="cpu")

        # Offloaded components start on the host; the pipeline moves them as it runs.
        offload = offload or OffloadConfig()
        components = load_components(layout, device if offload.mode == "none" else "cpu", dtype, decoder=decoder)
        return cls(
            text_encoder=components.text_encoder,
            video_vae=components.video_vae,
            video_decoder=components.video_decoder,
            audio_vae=components.audio_vae,
            dit_loaders={name: loader(name, config) for name, config in archs.items()},
            device=device,
            offload=offload,
            parallel=state,
            **kwargs,
        )

    @classmethod
    def random(
        cls,
        arch: str = "full",
        device=None,
        *,
        runtime: RuntimeConfig | None = None,
        offload: OffloadConfig | None = None,
        quant: QuantConfig | None = None,
        decoder: str = "turbo",
        sr: SRConfig | None = None,
        seed: int = 0,
    ) -> MagiHumanPipeline:
        """Every component of release size ``arch`` (``full``: the 15B release; ``tiny``) with random
        weights made directly on the device (:mod:`magihuman.components.arch`): no checkpoint, no host
        copy. What the speed table times; same dtypes as :meth:`from_pretrained`. The DiTs are built
        on first use, like loaded ones (on the host under ``offload``, which moves them as it runs)."""
        _check_options({"device": device, "runtime": runtime, "offload": offload, "quant": quant})
        if decoder not in VIDEO_DECODERS:
            raise ValueError(f"decoder must be one of {VIDEO_DECODERS}, got {decoder!r}")
        release = release_arch(arch)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        offload = offload or OffloadConfig()
        home = device if offload.mode == "none" else torch.device("cpu")  # offloaded parts start on the host
        components = random_components(release, home, dtype, torch.float32, decoder, seed)
        return cls(
            text_encoder=components.text_encoder,
            video_vae=components.video_vae,
            video_decoder=components.video_decoder,
            audio_vae=components.audio_vae,
            dit_loaders={name: partial(build_dit, config, home, seed) for name, config in release.dits.items()},
            device=device,
            offload=offload,
            quant=quant,
            runtime=runtime,
            sr=sr,
        )

    def dit(self, name: str) -> nn.Module:
        """The named DiT ready to run (``DiT.forward(packed)``): loaded on first use, then
        quantized, placed, compiled (``runtime``) and parallelized as configured; with model
        offload, made the one component on the device."""
        if name not in self._dits:
            model = quantize(self.dit_loaders[name](), self.quant.mode)
            self._dit_configs[name] = model.config
            if self._offloader is not None:
                self._offloader.register(name, model)
            elif self.offload.mode == "layer":
                stream_layers(model, model.block.layers, self.device, self.offload.resident_layers)
            else:
                model.to(self.device)
            apply_runtime(model, self.runtime)
            self._dits[name] = parallelize(model, self.parallel) if self.parallel is not None else model
        self._activate(name)
        return self._dits[name]

    def negative_embedding(self) -> Tensor:
        """The fixed negative prompt of the unconditional pass, encoded once."""
        if self._negative is None:
            self._activate("text_encoder")
            self._negative = self.text_encoder.encode(NEGATIVE_PROMPT_FILE.read_text().strip())[0]
        return self._negative

    # -- generation -----------------------------------------------------------------

    @staticmethod
    def check_inputs(
        request: GenerationRequest, output: str | Path | None = None, files: FilePolicy = LOCAL_FILES
    ) -> GenerationRequest:
        """The one validator of a request (and its ``output`` path), usable before any model loads.

        Raises :class:`~magihuman.inputs.RequestError` naming every bad field, its value and what is
        expected. Returns the request with parsed values (a float duration) and its media read once,
        under ``files``, as bytes: nothing on disk is opened again, so a file swapped after the check
        (a symlink re-pointed) is never read. :meth:`generate` runs it too.
        """
        problems = inputs.Problems()
        sampler = request.sampler
        values = {
            "prompt": problems.check("prompt", inputs.prompt, request.prompt),
            "duration": problems.check("duration", inputs.duration, request.duration),
            "seed": None if request.seed is None else problems.check("seed", inputs.seed, request.seed),
        }
        for name, rule in (("image", inputs.image), ("audio", inputs.audio)):
            source = getattr(request, name)
            if source is not None:
                values[name] = problems.check(name, lambda v, rule=rule: rule(inputs.media_bytes(v, files)), source)
        problems.check("resolution", inputs.resolution, request.resolution)
        problems.check("sampler.num_steps", inputs.steps, sampler.num_steps)
        for name in ("guidance_scale", "late_guidance_scale", "audio_guidance_scale", "capped_frame_scale"):
            scale = getattr(sampler, name)
            if scale is not None and name == "guidance_scale" and sampler.cfg_passes == 2:
                problems.check(f"sampler.{name}", inputs.guidance, scale)
            elif scale is not None:  # finite: a NaN scale would surface as a broken mp4
                problems.check(f"sampler.{name}", inputs.number, scale)
        if output is not None:
            problems.check("output", inputs.output, output)
        problems.raise_any()
        return replace(request, **values)

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, output: Path | None = None) -> GenerationResult:
        request = self.check_inputs(request, output)
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        generator = torch.Generator().manual_seed(seed)
        resolution: Resolution = lookup_resolution(request.resolution)
        timer, memory = StageTimer(cuda=self.device.type == "cuda"), PeakMemory(self.device)
        memory.reset()
        shape = clip_shape(request.duration)
        base_h, base_w = resolution.base_size

        with timer.stage(TEXT_ENCODE):
            self._activate("text_encoder")
            text = self.text_encoder.encode(request.prompt)[0]
            negative = self.negative_embedding() if request.sampler.cfg_passes == 2 else None

        with timer.stage(IMAGE_ENCODE):
            image_latent = self._encode_image(request.image, base_h, base_w)  # activates the VAE

        with timer.stage(AUDIO_ENCODE):
            audio_latent = None
            if request.audio is not None:
                # As the release: the speech, cut to the requested seconds (never padded), sets the
                # clip's length (one audio latent per video frame); its latents are a posterior sample.
                self._activate("audio_vae")
                rate = self.audio_vae.sample_rate
                waveform = load_audio(request.audio, rate)[: round(request.duration * rate)]
                audio_latent = self.audio_vae.encode(waveform, generator=generator)
                shape = ClipShape(audio_latent.shape[0])

        # Seeded noise is drawn on the host (the same on any device), then moved once; from here
        # to the decoders the sampler state, conditions and model all live on the device.
        latents = self.video_vae.geometry  # the latent space the VAE encodes the image into and decodes from
        video = torch.randn(1, *latents.latent_shape(shape.video_frames, base_h, base_w), generator=generator)
        video = video.to(self.device)
        audio = torch.randn(1, shape.num_audio, self.audio_vae.latent_dim, generator=generator).to(self.device)
        constraints: list[Constraint] = []
        if image_latent is not None:
            constraints.append(ImageFirstFrame(image_latent.unsqueeze(0).to(self.device)))
        if audio_latent is not None:
            audio = audio_latent.unsqueeze(0).float().to(self.device)
            if request.distilled_a2v_audio == "pinned" or request.sampler.name != "dmd":
                constraints.append(FixedAudio(audio))

        texts = [text] if negative is None else [text, negative]
        base_dit = request.sampler.dit
        velocity, calls = self._velocity(base_dit, texts, "v2", video.shape, audio.shape)
        watch = FiniteWatch(self._timed(velocity, timer, BASE_DENOISE))
        with timer.stage(BASE_DENOISE):
            video, audio = sample(
                request.sampler, make_denoise(request.sampler, watch),
                video, audio, generator=generator, constraints=constraints,
            )  # fmt: skip
        watch.check(video, audio, f"{BASE_DENOISE} ({base_dit} DiT)", request.sampler, request, seed)
        stage_calls = {BASE_DENOISE: calls}

        if resolution.sr_model is not None:
            sr_h, sr_w = resolution.sr_size
            sr_size = latents.latent_shape(shape.video_frames, sr_h, sr_w)[1:]
            sr_constraints: list[Constraint] = []
            with timer.stage(IMAGE_ENCODE):
                sr_image = self._encode_image(request.image, sr_h, sr_w)
            if sr_image is not None:
                sr_constraints.append(ImageFirstFrame(sr_image.unsqueeze(0).to(self.device)))
            sr_texts = [text] if self.sr.sampler.cfg_passes == 1 else [text, self.negative_embedding()]
            velocity, calls = self._velocity(resolution.sr_model, sr_texts, "v1", (*video.shape[:2], *sr_size),
                                             audio.shape)  # fmt: skip
            watch = FiniteWatch(self._timed(velocity, timer, SR_DENOISE))
            with timer.stage(SR_DENOISE):
                video, audio = sample_sr(
                    self.sr, make_denoise(self.sr.sampler, watch),
                    video, audio, sr_size, generator=generator, constraints=sr_constraints,
                )  # fmt: skip
            watch.check(video, audio, f"{SR_DENOISE} ({resolution.sr_model} DiT)", self.sr.sampler, request, seed)
            stage_calls[SR_DENOISE] = calls

        with timer.stage(VIDEO_DECODE):
            self._activate("video_decoder" if self.video_decoder is not self.video_vae else "video_vae")
            frames = pixels_to_frames(self.video_decoder.decode(video[0]))
            frames = resize_frames(frames, resolution.output_size[1], resolution.output_size[0])
        with timer.stage(AUDIO_DECODE):
            self._activate("audio_vae")
            waveform = self.audio_vae.decode(audio[0])
        path = None
        if output is not None and (self.parallel is None or self.parallel.rank == 0):
            with timer.stage(MUX):
                path = write_mp4(output, frames, waveform, fps=FPS, sample_rate=self.audio_vae.output_sample_rate)
        return GenerationResult(
            path=path,
            seed=seed,
            video_latent=video[0].cpu(),
            audio_latent=audio[0].cpu(),
            duration=shape.seconds,
            frames=frames,
            waveform=waveform,
            sample_rate=self.audio_vae.output_sample_rate,
            timings=timer.stages(),
            step_times=timer.steps(),
            peak_memory_bytes=memory.read(),
            dit_calls=stage_calls,
        )

    def _encode_image(self, image: Path | bytes | None, height: int, width: int) -> Tensor | None:
        if image is None:
            return None
        self._activate("video_vae")
        pixels = image_to_tensor(resize_crop(load_image(image), width, height)).unsqueeze(1)  # [3, 1, H, W]
        return self.video_vae.encode(pixels.to(self.video_vae.dtype))

    def _velocity(
        self, name: str, texts: list[Tensor], coords_style: str, video_shape, audio_shape
    ) -> tuple[Velocity, DiTCalls]:
        """The DiT ``name`` as a batched velocity over ``texts`` (split over CFG ranks if
        configured), and the record of the forwards it runs."""
        model = self.dit(name)
        _, _, t, h, w = video_shape
        calls = DiTCalls(self._dit_configs[name], (t, h // 2, w // 2), audio_shape[1],
                         tuple(x.shape[0] for x in texts), FRAME_RECEPTIVE_FIELD)  # fmt: skip

        def bind(bound: list[Tensor]) -> Velocity:
            return dit_velocity(model, bound, coords_style, calls=calls, device=self.device,
                                options=self.forward_options)

        return (parallel_velocity(bind, texts, self.parallel) if self.parallel else bind(texts)), calls

    @staticmethod
    def _timed(velocity: Velocity, timer: StageTimer, stage: str) -> Velocity:
        def timed(video: Tensor, audio: Tensor, sigma: float):
            with timer.step(stage):
                return velocity(video, audio, sigma)

        return timed


def _check_options(options: dict) -> None:
    """Refuse runtime / quant / offload / parallel combinations the device cannot run, before
    anything loads (the constructor checks again with the final device)."""
    parallel = options.get("parallel")
    device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    check_runtime(options.get("runtime") or RuntimeConfig(), device, (options.get("quant") or QuantConfig()).mode,
                  (options.get("offload") or OffloadConfig()).mode, parallel is not None and parallel.world_size > 1)
