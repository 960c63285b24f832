"""Checkpoint round trips and the errors a broken checkpoint must give."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from magihuman.model import DiT, checkpoint
from magihuman.model.checkpoint import (
    INDEX_FILE,
    CheckpointError,
    build_and_load,
    checkpoint_files,
    load_rows_into,
    save_state_dict,
    verify_checkpoint,
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


# --- verify_checkpoint: everything a load would trip on, from the headers, before anything loads ---


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_reads_headers_only(tmp_path, state, fmt, monkeypatch):
    root = save_state_dict(state, tmp_path / "ckpt", **FORMATS[fmt])

    def no_data(*args, **kwargs):
        raise AssertionError("verify_checkpoint read tensor data")

    monkeypatch.setattr(checkpoint, "iter_tensors", no_data)
    monkeypatch.setattr(checkpoint, "load_safetensors_bytes", no_data)
    verify_checkpoint(root, TINY)


def _rewrite_header(path, edit):
    """Apply ``edit`` to the parsed header of a plain safetensors file, keeping its data."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = edit(json.loads(data[8 : 8 + n]))
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def _header_cut(path):
    path.write_bytes(path.read_bytes()[:40])


def _data_cut(path):
    path.write_bytes(path.read_bytes()[:-100])


def _not_json(path):
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\xff" * (int.from_bytes(data[:8], "little")) + data[8 + int.from_bytes(data[:8], "little") :])


def _wrong_offsets(path):
    def edit(header):
        key = next(k for k in header if k != "__metadata__")
        begin, end = header[key]["data_offsets"]
        header[key]["data_offsets"] = [begin, end - 2]
        return header

    _rewrite_header(path, edit)


BROKEN_FILES = {  # what is wrong with the second shard -> what the error says
    "header cut": (_header_cut, "header length .* does not fit the file"),
    "data cut": (_data_cut, "its header describes .* bytes of tensor data, the file holds"),
    "header not JSON": (_not_json, "header is not JSON"),
    "offsets": (_wrong_offsets, "header gives .* bytes; .* needs"),
}


@pytest.mark.parametrize("kind", BROKEN_FILES)
def test_a_broken_shard_is_named_before_loading(tmp_path, state, kind):
    root = sharded(tmp_path, state)
    victim = checkpoint_files(root)[1]
    breaks, message = BROKEN_FILES[kind]
    breaks(victim)
    with pytest.raises(CheckpointError, match=f"{victim.name}.*{message}|{message}.*{victim.name}"):
        verify_checkpoint(root, TINY)


def test_a_compressed_shard_with_a_cut_header_is_named(tmp_path, state):
    root = sharded(tmp_path, state, compress=True)
    victim = checkpoint_files(root)[1]
    victim.write_bytes(victim.read_bytes()[:30])
    with pytest.raises(CheckpointError, match=f"cannot read .*{victim.name}"):
        verify_checkpoint(root, TINY)


def _edit_index(root, edit):
    index = json.loads((root / INDEX_FILE).read_text())
    edit(index["weight_map"])
    (root / INDEX_FILE).write_text(json.dumps(index))


def test_an_index_that_does_not_match_its_shards_is_named(tmp_path, state):
    root = sharded(tmp_path, state)
    first, second = (f.name for f in checkpoint_files(root)[:2])
    index = json.loads((root / INDEX_FILE).read_text())["weight_map"]
    moved = next(k for k, v in index.items() if v == first)
    dropped = next(k for k, v in index.items() if v == second)

    def edit(weight_map):
        weight_map[moved] = second
        weight_map["ghost.weight"] = first
        del weight_map[dropped]

    _edit_index(root, edit)
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(root, TINY)
    message = str(err.value)
    assert f"{root / INDEX_FILE} does not match its shards" in message
    assert f"1 keys in no index entry: {dropped}" in message
    assert f"{moved} (index: {second}, stored in {first})" in message
    assert f"1 indexed keys missing from their shard: ghost.weight (index: {first})" in message


@pytest.mark.parametrize("index", ["{not json", '{"weight_map": ["a"]}', '{"metadata": {}}'])
def test_a_broken_index_is_named(tmp_path, state, index):
    root = sharded(tmp_path, state)
    (root / INDEX_FILE).write_text(index)
    with pytest.raises(CheckpointError, match=f"{INDEX_FILE}.*weight_map"):
        verify_checkpoint(root, TINY)


def test_a_key_stored_twice_is_named(tmp_path, state):
    root = sharded(tmp_path, state)
    first, second = checkpoint_files(root)[:2]
    key = next(iter(load_file(first)))
    save_file({**load_file(second), key: state[key]}, str(second))
    (root / INDEX_FILE).write_text(json.dumps({"weight_map": {k: f.name for f in (first, second) for k in load_file(f)}}))  # both hold it
    with pytest.raises(CheckpointError, match=f"{key} is stored twice: in {first.name} and {second.name}"):
        verify_checkpoint(root, TINY)


def test_keys_shapes_and_dtypes_are_checked_against_the_config(tmp_path, state):
    key = "block.layers.0.mlp.down_proj.weight"
    root = save_state_dict(dict(state, **{key: state[key].float()}), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=f"dtype mismatches: {key}: checkpoint float32 vs model bfloat16"):
        verify_checkpoint(root, TINY)
    good = save_state_dict(state, tmp_path / "good")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        verify_checkpoint(good, replace(TINY, hidden_size=TINY.hidden_size * 2))


@pytest.mark.parametrize("fmt", ["single", "sharded_zst"])
def test_a_non_finite_weight_is_named_with_its_file(tmp_path, state, fmt):
    key = "block.layers.1.attention.linear_qkv.weight"
    poisoned = dict(state)
    poisoned[key] = state[key].clone()
    poisoned[key][3, 5] = float("nan")
    root = save_state_dict(poisoned, tmp_path / "ckpt", **FORMATS[fmt])
    verify_checkpoint(root, TINY)  # headers are fine: the value shows where the data is read
    holder = next(f for f in checkpoint_files(root) if key in dict(checkpoint.iter_tensors(f)))
    with pytest.raises(CheckpointError, match=f"{holder}: tensor {key} has 1 non-finite values"):
        build_and_load(lambda: DiT(TINY), root)


def test_sharded_load_names_a_non_finite_weight_in_its_rows(tmp_path, state):
    key = "adapter.video_embedder.weight"
    poisoned = dict(state, **{key: state[key].clone()})
    poisoned[key][-1, 0] = float("inf")
    root = save_state_dict(poisoned, tmp_path / "ckpt")
    with torch.device("meta"):
        model = DiT(TINY)
    model.to_empty(device="cpu")
    with pytest.raises(CheckpointError, match=f"tensor {key} has 1 non-finite values"):
        load_rows_into(model, root, lambda k, t: (t, 0))


def test_the_pipeline_checks_every_dit_before_any_component_loads(tmp_path, monkeypatch):
    from magihuman import pipeline
    from magihuman.components.tiny import ensure_tiny_release

    release = ensure_tiny_release()
    root = tmp_path / "release"
    root.mkdir()
    for part in release.root.iterdir():
        (root / part.name).symlink_to(part)
    (root / "1080p_sr").unlink()
    state = dict(checkpoint.iter_tensors(checkpoint_files(release.sr_1080p)[0]))
    del state[next(iter(state))]
    save_state_dict(state, root / "1080p_sr")

    def no_components(*args, **kwargs):
        raise AssertionError("a component loaded before the DiT checkpoints were checked")

    monkeypatch.setattr(pipeline, "load_components", no_components)
    with pytest.raises(CheckpointError, match=f"checkpoint {root / '1080p_sr'} does not match the model"):
        pipeline.MagiHumanPipeline.from_pretrained(root, dit_arch="tiny", device="cpu")
