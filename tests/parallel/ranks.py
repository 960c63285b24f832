"""What each of the 2 spawned CPU ranks runs; every rank saves its outputs for the tests to check.

One launch serves all parallel tests (a process start costs seconds, the tiny forwards
milliseconds). Ranks join through :func:`magihuman.parallel.init_distributed` with the
same environment variables torchrun sets.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import Tensor

from magihuman.model import ForwardOptions
from magihuman.parallel import (
    ContextParallelDiT,
    ParallelConfig,
    ParallelState,
    init_distributed,
    local_parameter_bytes,
    parallel_velocity,
    shard_dit,
)
from magihuman.sampling import cfg_denoise
from tests.parallel.cases import CFG_SCALES, CFG_SIGMA, dit_velocity, load_case

WORLD_SIZE = 2


def rank_main(rank: int, port: int, golden: list[Path], out_dir: Path) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    cp = init_distributed(ParallelConfig(cp_size=WORLD_SIZE, fsdp=True), device_type="cpu")
    cfg = init_distributed(ParallelConfig(cfg_parallel=True), device_type="cpu")
    results: dict[str, object] = {}
    with torch.inference_mode():
        for path in golden:
            results |= context_parallel(path, cp) | cfg_parallel(path, cfg) | fsdp(path, cp)
    torch.save(results, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def context_parallel(path: Path, state: ParallelState) -> dict[str, Tensor]:
    case = load_case(path)
    model = ContextParallelDiT(case.model, state.cp_group)
    results = {f"cp/{path.stem}/{name}": model(packed) for name, packed in case.packs().items()}
    flex = ForwardOptions(attn_backend="flex")  # the block-mask kernel behind the same all-to-alls
    results[f"cp_flex/{path.stem}/two_samples"] = model(case.packs()["two_samples"], flex)
    return results


def cfg_parallel(path: Path, state: ParallelState) -> dict[str, Tensor]:
    case = load_case(path)
    texts = [case.text, case.negative_text()]
    velocity = parallel_velocity(lambda t: dit_velocity(case.model, t, case), texts, state)
    v_video, v_audio = cfg_denoise(velocity, **CFG_SCALES)(case.video, case.audio, CFG_SIGMA)
    return {f"cfg/{path.stem}/video": v_video, f"cfg/{path.stem}/audio": v_audio}


def fsdp(path: Path, state: ParallelState) -> dict[str, object]:
    case = load_case(path)
    packs = case.packs()
    results: dict[str, object] = {f"bytes/{path.stem}/full": local_parameter_bytes(case.model)}
    sharded = shard_dit(case.model, state.fsdp_mesh)
    results[f"bytes/{path.stem}/sharded"] = local_parameter_bytes(sharded)
    results[f"fsdp/{path.stem}/single"] = sharded(packs["single"])
    results[f"fsdp_cp/{path.stem}/two_samples"] = ContextParallelDiT(sharded, state.cp_group)(packs["two_samples"])
    released = shard_dit(load_case(path, fp32=False).model, state.fsdp_mesh)  # bf16 and fp32 in one layer
    results[f"fsdp_released/{path.stem}/single"] = released(packs["single"])
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(golden: list[Path], out_dir: Path, timeout_s: float = 240.0) -> list[dict[str, object]]:
    """Spawn the ranks on the golden files, wait (killing them past ``timeout_s``), load each rank's results."""
    return spawn(rank_main, (golden, out_dir), out_dir, timeout_s)


def spawn(main, args: tuple, out_dir: Path, timeout_s: float) -> list[dict[str, object]]:
    """Run ``main(rank, port, *args)`` on WORLD_SIZE processes; each saves ``out_dir / rank{r}.pt``."""
    context = mp.spawn(main, args=(free_port(), *args), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"parallel ranks did not finish in {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]
