"""Shared fixtures for the CPU micro-benchmarks (pytest-benchmark).

Models are random-weight and built once per session; inputs are seeded. Every
benchmarked call runs under ``torch.inference_mode``. With ``--benchmark-disable``
each benchmark body runs exactly once (the quick mode ``tests/test_benchmarks_quick.py``
uses it), so these fixtures must stay cheap to build. Heavy imports (diffusers) happen
in the fixtures that need them, so a ``-k`` selection starts fast (``magihuman-bench
compare`` starts a process per round). Every JSON written records the machine
(``pytest_benchmark_update_json``). Benchmarks marked ``pr`` form the pull-request selection
(``magihuman-bench compare``'s default, docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from pytest_benchmark.utils import load_timer
from torch import Tensor

from magihuman.model import DiT, DiTConfig
from magihuman.model.presets import TINY
from magihuman.sampling.guidance import Velocity
from magihuman.sampling.velocity import dit_velocity

# SPEC section 6: the public reference DiT takes ~1.3 s for this on 2 CPU cores.
MID = DiTConfig(
    num_layers=8,
    hidden_size=1024,
    head_dim=128,
    num_query_groups=2,
    text_in_channels=1024,
    mm_layers=(0, 1, 6, 7),
    gelu7_layers=(0, 1),
)


@dataclass(frozen=True)
class Clip:
    """Random latents of one sample: video ``[48, T, H, W]``, audio ``[(T-1)*4+1, 64]``, text ``[Nt, Ct]``."""

    video: Tensor
    audio: Tensor
    text: Tensor

    @property
    def tokens(self) -> int:
        t, h, w = self.video.shape[1:]
        return t * (h // 2) * (w // 2) + self.audio.shape[0] + self.text.shape[0]


def make_clip(frames: int, height: int, width: int, text_tokens: int, text_channels: int, seed: int = 0) -> Clip:
    g = torch.Generator().manual_seed(seed)
    return Clip(
        video=torch.randn(48, frames, height, width, generator=g),
        audio=torch.randn((frames - 1) * 4 + 1, 64, generator=g),
        text=torch.randn(text_tokens, text_channels, generator=g),
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "pr: the pull-request selection of magihuman-bench compare (tiny sizes)")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what changes CPU timings besides the code: torch version and thread count."""
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()


_machine: dict | None = None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record which machine this was: its fingerprint and a calibration matmul timed with the
    benchmarks' own timer in this process (``magihuman.harness.machine``; docs/performance.md)."""
    global _machine
    try:
        from magihuman.harness.machine import machine_record
    except ImportError:  # magihuman-bench compare runs this suite on a commit from before machine records
        return
    if _machine is None:  # the hook runs once per JSON written (--benchmark-json and --benchmark-save)
        timer = load_timer(config.getoption("benchmark_timer")).target
        _machine = machine_record("cpu", timer)
    output_json["magihuman"] = _machine


@pytest.fixture(scope="session")
def tiny_model() -> DiT:
    """The tiny release's DiT with random weights, made as ``MagiHumanPipeline.random`` makes them."""
    from magihuman.components.arch import build_dit, release_arch

    return build_dit(release_arch("tiny").dits["distill"], "cpu")


@pytest.fixture(scope="session")
def mid_model() -> DiT:
    from magihuman.components.arch import build_dit

    return build_dit(MID, "cpu")


@pytest.fixture(scope="session")
def tiny_clip() -> Clip:
    """1 s at 256p for the tiny preset: 7 latent frames of 16x28 -> 784 + 25 + 64 = 873 tokens."""
    return make_clip(7, 16, 28, text_tokens=64, text_channels=TINY.text_in_channels)


@pytest.fixture(scope="session")
def pr_clip() -> Clip:
    """The ``pr`` selection's clip: 3 latent frames of 8x8 -> 48 video + 9 audio + 16 text = 73 tokens,
    small enough to count a forward's instructions under valgrind in seconds."""
    return make_clip(3, 8, 8, text_tokens=16, text_channels=TINY.text_in_channels)


@pytest.fixture(scope="session")
def mid_clip() -> Clip:
    """11 latent frames of 16x28 -> 1232 video + 41 audio + 312 text = 1585 tokens."""
    clip = make_clip(11, 16, 28, text_tokens=312, text_channels=MID.text_in_channels)
    assert clip.tokens == 1585
    return clip


@pytest.fixture(scope="session")
def tiny_velocity(tiny_model, tiny_clip) -> Velocity:
    """One conditional pass (no CFG) over the tiny DiT: the pipeline's velocity (packed once, then
    only the latents are written each step)."""
    return dit_velocity(tiny_model, [tiny_clip.text], "v2")


@pytest.fixture(scope="session")
def tiny_cfg_velocity(tiny_model, tiny_clip) -> Velocity:
    """Cond + uncond rows in one forward (2-pass CFG batched); the uncond text is longer, as in the release."""
    n, channels = tiny_clip.text.shape
    uncond = torch.randn(2 * n, channels, generator=torch.Generator().manual_seed(1))
    return dit_velocity(tiny_model, [tiny_clip.text, uncond], "v2")


@pytest.fixture(scope="session")
def tiny_vae():
    """SPEC section 6's 2.9M-parameter Wan2.2-shaped VAE: the tiny release's own, built as the
    pipeline's random constructor builds it (``components.arch``)."""
    from magihuman.components.arch import build_video_vae, release_arch

    torch.manual_seed(0)
    return build_video_vae(release_arch("tiny"), "cpu", torch.float32)
