"""Checkpoint round trips and the errors a broken checkpoint must give."""

from __future__ import annotations

import json

import pytest
import torch

from magihuman.model import DiT
from magihuman.model.checkpoint import (
    INDEX_FILE,
    CheckpointError,
    build_and_load,
    checkpoint_files,
    load_rows_into,
    save_state_dict,
)
from magihuman.model.dit import init_weights
from magihuman.model.presets import TINY

FORMATS = {
    "single": dict(),
    "sharded": dict(max_shard_bytes=200_000),
    "sharded_zst": dict(max_shard_bytes=200_000, compress=True),
    "single_zst": dict(compress=True),
}


@pytest.fixture(scope="module")
def state():
    return init_weights(DiT(TINY), seed=3).state_dict()


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_bit_identical(tmp_path, state, fmt):
    root = save_state_dict(state, tmp_path / "ckpt", **FORMATS[fmt])
    files = checkpoint_files(root)
    assert (len(files) > 1) == ("sharded" in fmt)
    assert all(f.name.endswith(".zst") == ("zst" in fmt) for f in files)
    loaded = build_and_load(lambda: DiT(TINY), root).state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype, k  # stored dtypes kept (bf16 linears, fp32 rest)
        assert torch.equal(loaded[k], v), k


def sharded(tmp_path, state, **kw):
    return save_state_dict(state, tmp_path / "ckpt", max_shard_bytes=200_000, **kw)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_shard_is_an_error(tmp_path, state, compress):
    root = sharded(tmp_path, state, compress=compress)
    victim = checkpoint_files(root)[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cannot read .*{victim.name}"):
        build_and_load(lambda: DiT(TINY), root)


def test_missing_shard_is_named(tmp_path, state):
    root = sharded(tmp_path, state)
    victim = checkpoint_files(root)[2]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"shards that are missing: \\['{victim.name}'\\]"):
        build_and_load(lambda: DiT(TINY), root)


def test_wrong_keys_and_shapes_listed_together(tmp_path, state):
    broken = dict(state)
    del broken["final_norm_video.weight"]
    broken["block.layers.9.mlp.down_proj.weight"] = torch.zeros(2, 2)
    broken["adapter.video_embedder.bias"] = torch.zeros(7)
    root = save_state_dict(broken, tmp_path / "ckpt")
    with pytest.raises(CheckpointError) as err:
        build_and_load(lambda: DiT(TINY), root)
    message = str(err.value)
    assert "1 missing keys: final_norm_video.weight" in message
    assert "1 unexpected keys: block.layers.9.mlp.down_proj.weight" in message
    assert "adapter.video_embedder.bias: checkpoint [7] vs model [128]" in message


def test_a_tensor_in_the_wrong_dtype_is_named(tmp_path, state):
    key = "block.layers.0.mlp.down_proj.weight"
    assert state[key].dtype == torch.bfloat16
    root = save_state_dict(dict(state, **{key: state[key].float()}), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=f"1 dtype mismatches: {key}: checkpoint float32 vs model bfloat16"):
        build_and_load(lambda: DiT(TINY), root)


def test_index_points_at_zst_files_by_either_name(tmp_path, state):
    root = sharded(tmp_path, state, compress=True)
    index = json.loads((root / INDEX_FILE).read_text())
    index["weight_map"] = {k: v + ".zst" for k, v in index["weight_map"].items()}
    (root / INDEX_FILE).write_text(json.dumps(index))
    loaded = build_and_load(lambda: DiT(TINY), root).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_files(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds neither model.safetensors"):
        checkpoint_files(tmp_path)


def test_load_rows_reads_only_the_rows_asked(tmp_path, state):
    """Rank 1 of 3 (torch.chunk rows, as FSDP2 shards): each tensor gets exactly its slice of the stored rows."""
    root = save_state_dict(state, tmp_path / "ckpt", max_shard_bytes=200_000)
    with torch.device("meta"):
        model = DiT(TINY)
    model.to_empty(device="cpu")
    slices: dict[str, torch.Tensor] = {}

    def rows_of(key, tensor):
        per_rank = -(-tensor.shape[0] // 3) if tensor.dim() else 0
        start = min(per_rank, tensor.shape[0]) if tensor.dim() else 0
        slices[key] = torch.empty_like(tensor[start : start + per_rank] if tensor.dim() else tensor)
        return slices[key], start

    load_rows_into(model, root, rows_of)
    assert slices.keys() == state.keys()
    for key, stored in state.items():
        per_rank = -(-stored.shape[0] // 3)
        assert torch.equal(slices[key], stored[per_rank : 2 * per_rank]), key


def test_load_rows_refuses_compressed_shards_and_wrong_dtypes(tmp_path, state):
    def whole(key, tensor):
        return tensor, 0

    with torch.device("meta"):
        model = DiT(TINY)
    model.to_empty(device="cpu")
    with pytest.raises(CheckpointError, match="zstd compressed; sharded loading reads slices"):
        load_rows_into(model, save_state_dict(state, tmp_path / "zst", compress=True), whole)
    wrong = {k: (v.float() if k.endswith("linear_qkv.weight") else v) for k, v in state.items()}
    with pytest.raises(CheckpointError, match="dtype mismatches"):
        load_rows_into(model, save_state_dict(wrong, tmp_path / "fp32"), whole)
