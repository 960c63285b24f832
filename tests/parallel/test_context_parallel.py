"""Context parallel (Ulysses, 2 CPU ranks) against the single-process DiT on the golden models."""

from __future__ import annotations

import pytest
import torch

from magihuman.model import Modality, pack
from magihuman.parallel.context import SequenceShard, check_heads, shard_tokens
from tests.golden import golden_params, read_golden, rel_l2
from tests.parallel.cases import load_case

PARALLEL_TOLERANCE = 1e-4  # rel L2 against the same model in one process, fp32


@pytest.mark.golden
@pytest.mark.parametrize(
    ("key", "pack_name"),
    [("cp", "single"), ("cp", "two_samples"), ("cp_flex", "two_samples")],
    ids=["single", "two_samples", "two_samples_flex"],
)
@pytest.mark.parametrize("path", golden_params("dit_*.safetensors"))
def test_context_parallel_matches_single_process(path, key, pack_name, rank_results):
    """``two_samples``: a CFG-style concat of odd length (padding) with local attention in the SR model."""
    case = load_case(path)
    packed = case.packs()[pack_name]
    with torch.no_grad():
        reference = case.model(packed)  # sdpa, one process
    errors = [rel_l2(results[f"{key}/{path.stem}/{pack_name}"], reference) for results in rank_results]
    line = f"{path.stem} {key}/{pack_name} (L={packed.x.shape[0]}): CP=2 rel L2 per rank "
    line += ", ".join(f"{e:.2e}" for e in errors)
    if pack_name == "single":
        golden_out = read_golden(path)[1]["packed.out"]
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


def test_kv_heads_must_split_over_ranks():
    check_heads(num_heads=40, num_kv_heads=8, world_size=8)
    with pytest.raises(ValueError, match="must divide the 8 KV heads"):
        check_heads(num_heads=40, num_kv_heads=8, world_size=3)
