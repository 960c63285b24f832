"""One sampler step over the tiny DiT (1 s at 256p): a DMD step (1 pass) and a UniPC step with
2-pass CFG batched into one forward, through the pipeline's velocity (packed on its first call,
later calls only write the latents, as in a sampler stage). ``test_dmd_step_pr`` (the ``pr``
selection) is the DMD step on the 73-token clip."""

from __future__ import annotations

import pytest
import torch

from magihuman.sampling import cfg_denoise, flow_sigmas, sample_dmd, sample_unipc
from magihuman.sampling.velocity import dit_velocity


def dmd_step(velocity, video, audio, sigmas):
    with torch.inference_mode():
        return sample_dmd(velocity, video, audio, sigmas, generator=torch.Generator().manual_seed(0), progress=False)


def unipc_cfg_step(denoise, video, audio, sigmas):
    with torch.inference_mode():
        return sample_unipc(denoise, video, audio, sigmas, progress=False)


def test_dmd_step(benchmark, tiny_velocity, tiny_clip):
    benchmark.group = "sampler_step"
    sigmas = flow_sigmas(8)[3:5]  # one step of the distilled schedule
    video, audio = benchmark(dmd_step, tiny_velocity, tiny_clip.video[None], tiny_clip.audio[None], sigmas)
    assert video.shape == (1, *tiny_clip.video.shape) and torch.isfinite(video).all()


@pytest.mark.pr
def test_dmd_step_pr(benchmark, tiny_model, pr_clip):
    benchmark.group = "sampler_step"
    velocity = dit_velocity(tiny_model, [pr_clip.text], "v2")
    sigmas = flow_sigmas(8)[3:5]
    video, audio = benchmark(dmd_step, velocity, pr_clip.video[None], pr_clip.audio[None], sigmas)
    assert video.shape == (1, *pr_clip.video.shape) and torch.isfinite(video).all()


def test_unipc_cfg_step(benchmark, tiny_cfg_velocity, tiny_clip):
    benchmark.group = "sampler_step"
    denoise = cfg_denoise(tiny_cfg_velocity, scale=5.0, audio_scale=5.0)
    sigmas = flow_sigmas(1)  # [0.999, 0]: one scheduler step (first order, as UniPC's first step always is)
    video, audio = benchmark(unipc_cfg_step, denoise, tiny_clip.video[None], tiny_clip.audio[None], sigmas)
    assert audio.shape == (1, *tiny_clip.audio.shape) and torch.isfinite(audio).all()
