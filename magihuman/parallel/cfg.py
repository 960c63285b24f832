"""CFG parallelism: the cond and uncond rows of a batched velocity call on different ranks.

:func:`~magihuman.sampling.guidance.cfg_denoise` asks for ``velocity(video[2B], audio[2B])``
with cond rows first, then uncond rows. With a group of P ranks (P = 2 for CFG) rank r
evaluates the r-th block of B*2/P rows, bound to its own block of texts, and the blocks
are all-gathered so every rank returns the same full batch that one process would.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from ..sampling.guidance import Velocity
from .context import all_gather_rows

BindTexts = Callable[[list[Tensor]], Velocity]  # texts -> velocity over rows bound to them


def cfg_parallel_velocity(bind: BindTexts, texts: list[Tensor], group: ProcessGroup | None = None) -> Velocity:
    """A :data:`Velocity` over all texts' rows, each rank computing only its block of them.

    ``bind(texts)`` makes a velocity whose rows are split evenly over ``texts`` in order (as
    :func:`magihuman.pipeline.dit_velocity` does); rank r binds the r-th of P equal blocks of
    ``texts``, so for CFG (two texts, P = 2) rank 0 runs the cond rows and rank 1 the uncond.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if len(texts) % world:
        raise ValueError(f"CFG parallel over {world} ranks needs a multiple of {world} texts, got {len(texts)}")
    per_rank = len(texts) // world
    local = bind(texts[rank * per_rank : (rank + 1) * per_rank])

    def velocity(video: Tensor, audio: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        if video.shape[0] % world:
            raise ValueError(f"batch of {video.shape[0]} rows does not split over {world} CFG ranks")
        rows = video.shape[0] // world
        block = slice(rank * rows, (rank + 1) * rows)
        v_video, v_audio = local(video[block], audio[block], sigma)
        return all_gather_rows(v_video, group), all_gather_rows(v_audio, group)

    return velocity

