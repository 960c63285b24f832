"""Sharded loading on 2 CPU ranks (gloo): each rank's peak RSS grows by its half of the model plus
at most one layer, never by the whole model, and the sharded model computes what one process does.

The model is ~330 MiB of bf16 / fp32 weights (24 layers at width 760), written as an index with
three shards, so the memory difference between a sharded and a full load is far above noise.
"""

from __future__ import annotations

import pytest
import torch

from magihuman.model import DiT, DiTConfig
from magihuman.model.checkpoint import save_state_dict
from tests.golden import rel_l2
from tests.parallel.load_ranks import load_rank, sample_packed
from tests.parallel.ranks import WORLD_SIZE, spawn

MIB = 2**20
# 19 heads and one KV group: the qkv projections have an odd number of rows, so FSDP2's shards
# are uneven (rank 0 gets one row more) and the row arithmetic is exercised.
ARCH = DiTConfig(num_layers=24, hidden_size=760, head_dim=40, num_query_groups=1, text_in_channels=64,
                 mm_layers=(0, 23), gelu7_layers=(0,))  # fmt: skip
SLACK = 24 * MIB  # process-group, FSDP bookkeeping and one slice in flight


@torch.no_grad()
def random_weights(model: DiT, seed: int = 0) -> DiT:
    """Uniform random weights, drawn in place in each parameter's dtype (one pass: 180M values in seconds)."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.uniform_(-0.05, 0.05, generator=generator)
    return model


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(model bytes, largest layer bytes, single-process output, per-rank results)."""
    root = tmp_path_factory.mktemp("sharded-load")
    model = random_weights(DiT(ARCH)).eval()
    model_bytes = tensor_bytes(model)
    layer_bytes = max(tensor_bytes(layer) for layer in model.block.layers)
    save_state_dict(model.state_dict(), root / "dit", max_shard_bytes=model_bytes // 3 + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' thread count: the same reduction order
    try:
        with torch.inference_mode():
            reference = model(sample_packed(ARCH))
    finally:
        torch.set_num_threads(threads)
    del model
    results = spawn(load_rank, (root / "dit", ARCH.to_dict(), root), root, timeout_s=240)
    return model_bytes, layer_bytes, reference, results


def test_each_rank_reads_only_its_shard(loaded):
    model_bytes, layer_bytes, _, results = loaded
    share = model_bytes / WORLD_SIZE
    for rank, r in enumerate(results):
        print(f"rank {rank}: model {model_bytes / MIB:.0f} MiB, largest layer {layer_bytes / MIB:.0f} MiB; "
              f"peak RSS growth sharded load {r['sharded_growth'] / MIB:.0f} MiB, full load "
              f"{r['full_growth'] / MIB:.0f} MiB")  # fmt: skip
        assert r["local_bytes"] == pytest.approx(share, rel=0.01)
        # the shard really is in memory, and nothing beyond it but one layer's worth
        assert 0.9 * share <= r["sharded_growth"] <= share + layer_bytes + SLACK, r["sharded_growth"] / MIB
        # loading whole maps every tensor; sharding reads (faults in) this rank's rows and copies them:
        # the measurement sees about the whole model
        assert r["full_growth"] >= 0.85 * model_bytes, r["full_growth"] / MIB


def test_sharded_model_matches_single_process(loaded):
    _, _, reference, results = loaded
    for rank, r in enumerate(results):
        error = rel_l2(r["out"], reference)
        print(f"rank {rank}: sharded-load output vs single process rel L2 {error:.1e}")
        assert error <= 1e-6, (rank, error)
