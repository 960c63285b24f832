"""What each of the 2 spawned CPU ranks runs for the sharded-loading test, and how it measures memory.

Peak resident memory is read from the kernel: ``VmHWM`` (the high-water mark of ``VmRSS``,
anonymous and file-backed pages alike, so memory-mapped checkpoint pages count too) after
resetting it to the current RSS through ``/proc/self/clear_refs``. Before each reset the
process returns freed heap to the OS (``malloc_trim``), so a load cannot hide its growth by
reusing memory an earlier step freed.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from magihuman.model import DiT, DiTConfig, pack
from magihuman.model.checkpoint import build_and_load
from magihuman.parallel import ParallelConfig, init_distributed, load_sharded, local_parameter_bytes, shard_dit
from tests.parallel.ranks import WORLD_SIZE

T = TypeVar("T")


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` size (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_growth(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and how far the process's peak RSS rose above its RSS at the start while it ran."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = status_bytes("VmRSS")
    result = fn()
    return result, status_bytes("VmHWM") - start


def sample_packed(config: DiTConfig, seed: int = 0):
    """A small packed clip (video, audio, text) for ``config``."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(config.video_in_channels // 4, 2, 4, 4, generator=generator)
    audio = torch.randn(5, config.audio_in_channels, generator=generator)
    text = torch.randn(6, config.text_in_channels, generator=generator)
    return pack(video, audio, text)


def load_rank(rank: int, port: int, directory: Path, arch: dict, out_dir: Path) -> None:
    """Load the checkpoint sharded (measured) and run it; then load it whole and shard it (measured)."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    state = init_distributed(ParallelConfig(fsdp=True, replicas=WORLD_SIZE), device_type="cpu")
    config = DiTConfig.from_dict(arch)
    packed = sample_packed(config)
    # One-time costs are not the load's: the first DiT built on meta imports torch._dynamo /
    # inductor (~120 MB of modules, via a meta-tensor decomposition in rope_bands).
    with torch.device("meta"):
        DiT(config)
    sharded, sharded_growth = peak_growth(lambda: load_sharded(lambda: DiT(config), directory, state.fsdp_mesh, "cpu"))
    with torch.inference_mode():
        out = sharded(packed)
    # what the pipeline did before: load everything, then shard (CPU: the device copy is a no-op)
    _, full_growth = peak_growth(lambda: shard_dit(build_and_load(lambda: DiT(config), directory), state.fsdp_mesh))
    results = {
        "sharded_growth": sharded_growth,
        "full_growth": full_growth,
        "local_bytes": local_parameter_bytes(sharded),
        "out": out,
    }
    torch.save(results, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()
