"""Context parallel (Ulysses, 2 CPU ranks) against the single-process DiT on the golden models."""

from __future__ import annotations

import pytest
import torch

from magihuman.model import Modality, pack
from magihuman.parallel.context import SequenceShard, kv_replicas, shard_tokens
from tests.golden import read_golden, rel_l2
from tests.parallel.cases import load_case, parallel_params

PARALLEL_TOLERANCE = 1e-4  # rel L2 against the same model in one process, fp32


@pytest.mark.golden
@pytest.mark.parametrize(
    ("key", "pack_name"),
    [("cp", "single"), ("cp", "two_samples"), ("cp_flex", "two_samples")],
    ids=["single", "two_samples", "two_samples_flex"],
)
@pytest.mark.parametrize("path", parallel_params(), ids=lambda p: p.stem)
def test_context_parallel_matches_single_process(path, key, pack_name, rank_results):
    """``two_samples``: a CFG-style concat of odd length (padding) with local attention in the SR model."""
    case = load_case(path)
    packed = case.packs()[pack_name]
    with torch.no_grad():
        reference = case.model(packed)  # sdpa, one process
    errors = [rel_l2(results[f"{key}/{path.stem}/{pack_name}"], reference) for results in rank_results]
    line = f"{path.stem} {key}/{pack_name} (L={packed.x.shape[0]}): CP=2 rel L2 per rank "
    line += ", ".join(f"{e:.2e}" for e in errors)
    golden = read_golden(path)[1]
    if pack_name == "single" and "packed.out" in golden:
        golden_out = golden["packed.out"]
        line += f"; vs golden packed.out {rel_l2(rank_results[0][f'cp/{path.stem}/single'], golden_out):.2e}"
    print(line)
    assert all(e <= PARALLEL_TOLERANCE for e in errors), errors


def test_shards_cover_the_padded_sequence():
    shards = [SequenceShard.of(107, r, 2) for r in range(2)]
    assert [(s.start, s.end) for s in shards] == [(0, 54), (54, 108)]
    assert all(s.padded_length == 108 and s.length == 107 for s in shards)
    assert SequenceShard.of(54, 1, 2) == SequenceShard(27, 54, 54, 54)


def test_padding_is_zero_text_tokens():
    packed = pack(torch.randn(4, 1, 2, 2), torch.randn(2, 3), torch.randn(2, 5))  # 1 + 2 + 2 = 5 tokens
    shard = SequenceShard.of(5, 1, 2)
    x, coords, modality = shard_tokens(packed, shard)
    assert x.shape[0] == coords.shape[0] == modality.shape[0] == 3
    assert torch.equal(x[:2], packed.x[3:]) and not x[2].any() and not coords[2].any()
    assert modality[2] == Modality.TEXT


@pytest.mark.parametrize(
    ("heads", "kv_heads", "world", "copies"),
    [(40, 8, 8, 1), (40, 8, 2, 1), (4, 1, 2, 2), (4, 2, 4, 2), (40, 8, 5, 5), (40, 8, 10, 5), (40, 8, 20, 5)],
)
def test_kv_heads_are_replicated_to_whole_heads_per_rank(heads, kv_heads, world, copies):
    """r*kv is a multiple of P (whole KV heads per rank) and r divides the group size (GQA still maps)."""
    assert kv_replicas(heads, kv_heads, world) == copies
    assert copies * kv_heads % world == 0 and (heads // kv_heads) % copies == 0


def test_cp_size_must_divide_query_heads():
    with pytest.raises(ValueError, match=r"must divide the 40 query heads; use one of \[1, 2, 4, 5, 8, 10, 20, 40\]"):
        kv_replicas(num_heads=40, num_kv_heads=8, world_size=3)
