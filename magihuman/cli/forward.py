"""``magihuman-forward``: one DiT forward of a clip, timed, through the pipeline's own objects.

The config is generate's (Hydra, ``configs/forward.yaml`` over generate.yaml's groups): the
pipeline is the model config's (the tiny release by default; ``model=random model.arch=full`` for
the release's shapes with random weights on a GPU), the DiT is the one the stage runs
(``pipeline.dit``: the sampler's for ``stage=base``, the resolution's SR model for ``stage=sr``),
the prompt is encoded by the pipeline's text encoder, and the clip is packed by the velocity
``generate`` binds (:func:`magihuman.sampling.velocity.dit_velocity`, with the pipeline's forward
options). ``warmup`` untimed forwards, then ``repeats`` timed by the pipeline's :class:`StageTimer`
(CUDA events on a GPU).

    magihuman-forward                                              # tiny release, 1 s at 256p
    magihuman-forward duration=5 resolution=540p_sr stage=sr repeats=5
    magihuman-forward model=random model.arch=full resolution=1080p duration=5 stage=sr   # GPU
"""

from __future__ import annotations

import json
import statistics

import hydra
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig

from magihuman.api import RequestError
from magihuman.cli.errors import ConfigError, cli_errors
from magihuman.clip import PATCH, RESOLUTIONS, Resolution, clip_shape, latent_size, resolution
from magihuman.harness.devices import achieved_tflops
from magihuman.harness.prompts import build_request
from magihuman.harness.sweep import stage_forward
from magihuman.pipeline import GenerationRequest, MagiHumanPipeline
from magihuman.timing import StageTimer

CONFIG_PATH = "pkg://magihuman.configs"
COORDS = {"base": "v2", "sr": "v1"}  # as generate packs each stage


class UsageError(ConfigError):
    """A config that names no forward to time (exit 2, one line), found before any model runs."""


def prepare(cfg: DictConfig) -> tuple[GenerationRequest, Resolution, MagiHumanPipeline]:
    """The checked request, its resolution and the model config's pipeline."""
    if cfg.stage not in COORDS or cfg.repeats < 1 or cfg.warmup < 0:
        raise UsageError(f"stage must be one of {tuple(COORDS)}, repeats >= 1 and warmup >= 0, got "
                         f"stage={cfg.stage!r}, repeats={cfg.repeats}, warmup={cfg.warmup}")  # fmt: skip
    try:
        request = build_request(cfg)  # checks the prompt, duration and resolution
        res = resolution(request.resolution)
        if cfg.stage == "sr" and res.sr_model is None:
            raise UsageError(f"stage=sr: resolution {res.name} has no SR stage; use one with an SR model "
                             f"({', '.join(n for n, r in RESOLUTIONS.items() if r.sr_model)})")  # fmt: skip
        return request, res, instantiate(cfg.model)
    except (RequestError, HydraException) as error:  # instantiate wraps the pipeline's own ValueError
        raise UsageError(str(error.__cause__ or error)) from error


@torch.inference_mode()
def run(cfg: DictConfig) -> dict:
    """Time ``cfg.repeats`` forwards of the configured stage; the report (also printed as JSON)."""
    request, res, pipeline = prepare(cfg)
    name = cfg.sampler.dit if cfg.stage == "base" else res.sr_model
    model = pipeline.dit(name)
    height, width = res.base_size if cfg.stage == "base" else res.sr_size
    shape = clip_shape(request.duration)

    generator = torch.Generator().manual_seed(cfg.seed)
    text = pipeline.text_encoder.encode(request.prompt)[0]
    texts = [text, pipeline.negative_embedding()] if cfg.stage == "base" and request.sampler.cfg_passes == 2 else [text]
    # Drawn on the host (the same on any device), then moved once, as generate does.
    video = torch.randn(len(texts), model.config.video_in_channels // (PATCH[1] * PATCH[2]), shape.latent_frames,
                        *latent_size(width, height), generator=generator).to(pipeline.device)  # fmt: skip
    audio = torch.randn(len(texts), shape.num_audio, model.config.audio_in_channels, generator=generator)
    audio = audio.to(pipeline.device)
    velocity, calls = pipeline._velocity(name, texts, COORDS[cfg.stage], video.shape, audio.shape)
    timer = StageTimer(cuda=pipeline.device.type == "cuda")
    for _ in range(cfg.warmup):  # the first packs and builds the layout; compiles and graph captures
        velocity(video, audio, 1.0)
    for _ in range(cfg.repeats):
        with timer.step("forward"):
            v_video, v_audio = velocity(video, audio, 1.0)
    times = timer.steps()["forward"]
    flops = stage_forward(calls)
    median = statistics.median(times)
    report = {
        "dit": name,
        "stage": cfg.stage,
        "resolution": res.name,
        "duration": request.duration,
        "rows": len(texts),
        "tokens": flops.tokens,
        "device": str(pipeline.device),
        "runtime": pipeline.runtime.label,
        "forward_s": times,
        "forward_s_median": median,
        "flops": flops.total,
        "tflops": achieved_tflops(flops.total, median),
        "velocity_video_shape": list(v_video.shape[1:]),
        "velocity_audio_shape": list(v_audio.shape[1:]),
        "finite": bool(torch.isfinite(v_video).all() and torch.isfinite(v_audio).all()),
    }
    print(json.dumps(report, indent=2))
    return report


@cli_errors("magihuman-forward")
@hydra.main(config_path=CONFIG_PATH, config_name="forward", version_base="1.3")
@cli_errors("magihuman-forward")
def main(cfg: DictConfig) -> None:
    run(cfg)  # bad input (UsageError, a ConfigError): one line on stderr, exit 2, by cli_errors


if __name__ == "__main__":
    main()
