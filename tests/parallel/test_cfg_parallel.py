"""CFG parallel (cond rows on rank 0, uncond on rank 1) against the single-process cfg_denoise."""

from __future__ import annotations

import pytest
import torch

from magihuman.sampling import cfg_denoise
from tests.golden import rel_l2
from tests.parallel.cases import CFG_SCALES, CFG_SIGMA, dit_velocity, load_case, parallel_params

PARALLEL_TOLERANCE = 1e-4


@pytest.mark.golden
@pytest.mark.parametrize("path", parallel_params(), ids=lambda p: p.stem)
def test_cfg_parallel_matches_single_process(path, rank_results):
    case = load_case(path)
    velocity = dit_velocity(case.model, [case.text, case.negative_text()], case)
    with torch.no_grad():
        reference = cfg_denoise(velocity, **CFG_SCALES)(case.video, case.audio, CFG_SIGMA)
    for rank, results in enumerate(rank_results):
        for name, expected in zip(("video", "audio"), reference):
            got = results[f"cfg/{path.stem}/{name}"]
            assert got.shape == expected.shape
            error = rel_l2(got, expected)
            print(f"{path.stem} rank {rank} CFG-parallel {name}: rel L2 {error:.2e}")
            assert error <= PARALLEL_TOLERANCE, (rank, name, error)
