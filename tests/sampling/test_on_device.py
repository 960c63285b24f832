"""Sampling stays on the model's device: after the first step nothing crosses host <-> device.

The tiny DiT and the sampler state live on the ``meta`` device, where every tensor is
shape-only: copying one to the host or reading a value (``.item()``, ``bool()``) raises,
so a run that finishes never read the device. A dispatch mode also counts every
cross-device copy and every scalar read of a device tensor, step by step: the first step
may move the packed layout (coordinates, modality ids) onto the device once, later steps
move nothing, and no device value is read at all.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from magihuman.model import DiT
from magihuman.model.presets import TINY
from magihuman.pipeline import dit_velocity
from magihuman.sampling import FixedAudio, ImageFirstFrame, SamplerConfig, SRConfig, make_denoise, sample, sample_sr

DEVICE = torch.device("meta")
aten = torch.ops.aten
READS = (aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal)  # a device value to the host


class TransferCounter(TorchDispatchMode):
    """Counts host->device and device->host copies and scalar reads of device tensors, per phase."""

    def __init__(self):
        super().__init__()
        self.phase = "before the first step"
        self.events: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in READS and args[0].device.type != "cpu":
            self.events[(self.phase, "device value read on the host")] += 1
        out = func(*args, **kwargs)
        if packet in (aten.to, aten._to_copy) and isinstance(out, torch.Tensor):
            self._copy(args[0].device, out.device)
        elif packet is aten.copy_:
            self._copy(args[1].device, args[0].device)
        return out

    def _copy(self, source: torch.device, target: torch.device) -> None:
        if source.type == target.type:
            return
        self.events[(self.phase, "device->host" if target.type == "cpu" else "host->device")] += 1


def counted(velocity, counter: TransferCounter):
    steps = 0

    def wrapped(video, audio, sigma):
        nonlocal steps
        counter.phase = "first step" if steps == 0 else "later steps"
        steps += 1
        out = velocity(video, audio, sigma)
        counter.phase = "between steps"
        return out

    return wrapped


@pytest.fixture(scope="module")
def model() -> DiT:
    with torch.device(DEVICE):
        return DiT(TINY).eval()


def latents(frames=3, height=8, width=12, cfg_rows=1):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 48, frames, height, width, generator=g).to(DEVICE)
    audio = torch.randn(1, (frames - 1) * 4 + 1, 64, generator=g).to(DEVICE)
    return video, audio


def texts(passes: int):
    return [torch.randn(5 + 3 * i, TINY.text_in_channels).to(DEVICE) for i in range(passes)]


def check(counter: TransferCounter) -> None:
    moved = {key: n for key, n in counter.events.items() if key[0] != "first step" or key[1] != "host->device"}
    later = {key: n for key, n in moved.items() if key[0] != "before the first step"}
    assert not later, f"transfers or host reads during sampling: {dict(counter.events)}"
    assert all(kind == "host->device" for _, kind in moved), dict(counter.events)


@pytest.mark.parametrize(
    "sampler",
    [
        SamplerConfig(name="dmd", num_steps=3, cfg_passes=1, progress=False),
        SamplerConfig(name="sde", num_steps=3, cfg_passes=1, progress=False),
        SamplerConfig(name="unipc_cfg", num_steps=3, cfg_passes=2, progress=False),
    ],
    ids=["dmd", "sde", "unipc_cfg"],
)
def test_base_sampling_never_leaves_the_device(model, sampler):
    video, audio = latents()
    constraints = [ImageFirstFrame(torch.zeros(1, 48, 1, 8, 12, device=DEVICE)), FixedAudio(audio)]
    counter = TransferCounter()
    with torch.inference_mode(), counter:
        velocity = counted(dit_velocity(model, texts(sampler.cfg_passes), "v2"), counter)
        out, _ = sample(sampler, make_denoise(sampler, velocity), video, audio,
                        generator=torch.Generator().manual_seed(1), constraints=constraints)  # fmt: skip
    assert out.device == DEVICE and out.shape == video.shape
    check(counter)
    assert counter.events[("first step", "host->device")] > 0  # the counter sees the layout move


def test_sr_stage_never_leaves_the_device(model):
    video, audio = latents()
    config = SRConfig(sampler=SamplerConfig(name="unipc_cfg", num_steps=3, cfg_passes=1, progress=False))
    counter = TransferCounter()
    with torch.inference_mode(), counter:
        velocity = counted(dit_velocity(model, texts(1), "v1", receptive_field=1), counter)
        counter.phase = "before the first step"  # SR noise is drawn on the host and moved once, here
        out, _ = sample_sr(config, make_denoise(config.sampler, velocity), video, audio, (3, 12, 16),
                           generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert out.device == DEVICE and out.shape == (1, 48, 3, 12, 16)
    check(counter)
