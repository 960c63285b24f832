"""FSDP2 on 2 CPU ranks (gloo): each rank stores half the weights and the outputs do not change."""

from __future__ import annotations

import pytest
import torch

from tests.golden import rel_l2
from tests.parallel.cases import load_case, parallel_params

PARALLEL_TOLERANCE = 1e-4


@pytest.mark.golden
@pytest.mark.parametrize("path", parallel_params(), ids=lambda p: p.stem)
def test_each_rank_holds_half_the_parameters(path, rank_results):
    full = [results[f"bytes/{path.stem}/full"] for results in rank_results]
    sharded = [results[f"bytes/{path.stem}/sharded"] for results in rank_results]
    print(f"{path.stem}: parameter bytes per rank, full {full}, FSDP2 {sharded}")
    assert sum(sharded) == pytest.approx(full[0], rel=0.01)
    assert all(s == pytest.approx(full[0] / 2, rel=0.02) for s in sharded)


@pytest.mark.golden
@pytest.mark.parametrize(
    ("key", "pack_name"),
    [("fsdp", "single"), ("fsdp_cp", "two_samples"), ("fsdp_released", "single")],
    ids=["fsdp", "fsdp_and_cp", "fsdp_released_dtypes"],
)
@pytest.mark.parametrize("path", parallel_params(), ids=lambda p: p.stem)
def test_sharded_outputs_match_single_process(path, key, pack_name, rank_results):
    """fp32 weights, also under context parallel; and the released mix of bf16 and fp32 weights."""
    case = load_case(path, fp32=key != "fsdp_released")
    with torch.no_grad():
        reference = case.model(case.packs()[pack_name])
    errors = [rel_l2(results[f"{key}/{path.stem}/{pack_name}"], reference) for results in rank_results]
    print(f"{path.stem} {key}/{pack_name}: rel L2 per rank {errors}")
    assert all(e <= PARALLEL_TOLERANCE for e in errors), errors
