"""DiT checkpoints: ``model.safetensors``, or ``model.safetensors.index.json`` + shards.

Shards may be zstd compressed (``*.safetensors.zst``). Keys are the release's module
names. Loading is strict and all-or-nothing: every missing key, unexpected key, shape and
dtype mismatch is collected into one :class:`CheckpointError` before any weight is assigned.
The model is built on the meta device and tensors are assigned as loaded (uncompressed
shards are memory mapped), so a 15B model never exists twice in memory. Stored dtypes
are kept as they are.

:func:`load_rows_into` is the sharded counterpart: it fills tensors that already exist on
their device (e.g. one rank's FSDP shards) with only the leading-dim rows each holds, read
with ``safe_open(...).get_slice``, so a rank never reads the rest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import zstandard
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from safetensors.torch import save_file
from torch import Tensor, nn

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ZST = ".zst"


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be loaded as asked; the message says what and why."""


# ---------------------------------------------------------------------------------------
# Reading.


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """The tensor files of a checkpoint directory, in a stable order; every one must exist."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    if (root / INDEX_FILE).is_file():
        names = sorted(set(_weight_map(root).values()))
        files, missing = [], []
        for name in names:
            # The index may name the shard with or without its .zst suffix.
            candidates = [root / name, root / (name + ZST)] if not name.endswith(ZST) else [root / name]
            found = next((c for c in candidates if c.is_file()), None)
            (files.append(found) if found else missing.append(name))
        if missing:
            raise CheckpointError(f"{root / INDEX_FILE} names shards that are missing: {missing}")
        return files
    for name in (SINGLE_FILE, SINGLE_FILE + ZST):
        if (root / name).is_file():
            return [root / name]
    raise CheckpointError(f"{root} holds neither {SINGLE_FILE}(.zst) nor {INDEX_FILE}")


def _weight_map(root: Path) -> dict[str, str]:
    try:
        weight_map = json.loads((root / INDEX_FILE).read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{root / INDEX_FILE} is not a safetensors index with a 'weight_map': {e!r}") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{root / INDEX_FILE}: 'weight_map' must map each key to a shard file name")
    return weight_map


def iter_tensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    """Tensors of one file; uncompressed files are memory mapped, .zst ones decompressed whole."""
    try:
        if path.name.endswith(ZST):
            with open(path, "rb") as f:
                data = zstandard.ZstdDecompressor().stream_reader(f).read()
            yield from load_safetensors_bytes(data).items()
        else:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
    except (SafetensorError, zstandard.ZstdError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {e}") from e


Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]  # key -> (shape, dtype)
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header
ZSTD_FRAME_HEADER_MAX_BYTES = 18  # magic + the largest frame header (content size included when known)


def read_header(path: Path) -> Shapes:
    """Key -> (shape, dtype) of one safetensors file (or ``.zst``) from its header alone.

    The header is checked as the loader would trust it: its length, each tensor's dtype, and
    data offsets that tile the data section exactly (a plain file shorter than its header
    says is truncated; a ``.zst`` file is checked against the size its zstd frame declares;
    a ``.zst`` cut short inside its data only shows when it is decompressed).
    """
    try:
        with open(path, "rb") as f:
            if path.name.endswith(ZST):
                stored = zstandard.get_frame_parameters(f.read(ZSTD_FRAME_HEADER_MAX_BYTES)).content_size
                f.seek(0)
                reader = zstandard.ZstdDecompressor().stream_reader(f)
                size, header = _read_header_bytes(reader, path, stored if stored > 0 else None)
            else:
                size, header = _read_header_bytes(f, path, os.fstat(f.fileno()).st_size)
    except (OSError, zstandard.ZstdError) as e:
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {e}") from e
    shapes, spans, end = {}, [], 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = _DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: header entry {key!r} is not a safetensors tensor ({e!r})") from e
        nbytes = math.prod(shape) * dtype.itemsize
        if stop - begin != nbytes:
            raise CheckpointError(f"{path}: header gives {key} {stop - begin} bytes; {_name(dtype)} {list(shape)} "
                                  f"needs {nbytes}")  # fmt: skip
        shapes[key] = (shape, dtype)
        spans.append((begin, stop))
    for begin, stop in sorted(spans):
        if begin != end:
            raise CheckpointError(f"{path}: tensor data is not contiguous at byte {end} of the data section")
        end = stop
    if size is not None and size != end:
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): its header describes {end} bytes of "
                              f"tensor data, the file holds {size}")  # fmt: skip
    return shapes


def _read_header_bytes(f, path: Path, total: int | None) -> tuple[int | None, dict]:
    """(bytes of tensor data that follow the header, or None if unknown; the parsed header)."""
    prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {len(prefix)} bytes, no safetensors header")
    n = int.from_bytes(prefix, "little")
    if n > MAX_HEADER_BYTES or (total is not None and 8 + n > total):
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): header length {n} does not fit the file")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): header is not a JSON object")
    return (None if total is None else total - 8 - n), header


def read_shapes(directory: str | os.PathLike) -> Shapes:
    """Key -> (shape, dtype) of a checkpoint from its headers alone (no tensor data is read);
    a key stored twice, or stored elsewhere than the index says, is an error."""
    root = Path(directory)
    files = checkpoint_files(root)
    shapes: Shapes = {}
    where: dict[str, Path] = {}
    for path in files:
        for key, entry in read_header(path).items():
            if key in where:
                raise CheckpointError(f"{key} is stored twice: in {where[key].name} and {path.name}")
            shapes[key], where[key] = entry, path
    if (root / INDEX_FILE).is_file():
        weight_map = _weight_map(root)
        named = {k: v.removesuffix(ZST) for k, v in weight_map.items()}
        stored = {k: p.name.removesuffix(ZST) for k, p in where.items()}
        unindexed = sorted(set(stored) - set(named))
        misplaced = sorted(f"{k} (index: {named[k]}, stored in {stored[k]})" for k in set(named) & set(stored)
                           if named[k] != stored[k])  # fmt: skip
        absent = sorted(f"{k} (index: {named[k]})" for k in set(named) - set(stored))
        if unindexed or misplaced or absent:
            lines = [f"{root / INDEX_FILE} does not match its shards:"]
            for title, items in (("keys in no index entry", unindexed), ("keys in another shard than indexed", misplaced),
                                 ("indexed keys missing from their shard", absent)):  # fmt: skip
                if items:
                    lines.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
            raise CheckpointError("\n".join(lines))
    return shapes


def verify_checkpoint(directory: str | os.PathLike, config) -> None:
    """Check a DiT checkpoint directory against ``DiT(config)`` before anything loads: its files,
    the sharded index against the shards, every safetensors header, the key set, shapes and
    dtypes. Reads headers only (and builds the model on the meta device): seconds for 15B."""
    from magihuman.model.dit import DiT

    with torch.device("meta"):
        model = DiT(config)
    check_keys(model, read_shapes(directory), str(directory))


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}  # fmt: skip


def check_keys(model: nn.Module, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], source: str) -> None:
    """Raise one error listing every missing key, unexpected key, shape and dtype mismatch.

    Stored dtypes are assigned as they are, so a tensor in another dtype than the model's
    (an fp32 linear where bf16 is expected) would otherwise load and fail later in the forward.
    """
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    common = set(expected) & set(shapes)
    mismatched = sorted(
        f"{k}: checkpoint {list(shapes[k][0])} vs model {list(expected[k])}"
        for k in common
        if shapes[k][0] != expected[k]
    )
    wrong_dtype = sorted(
        f"{k}: checkpoint {_name(shapes[k][1])} vs model {_name(state[k].dtype)}"
        for k in common
        if shapes[k][1] != state[k].dtype
    )
    if missing or unexpected or mismatched or wrong_dtype:
        lines = [f"checkpoint {source} does not match the model:"]
        problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched),
                    ("dtype mismatches", wrong_dtype))  # fmt: skip
        for title, items in problems:
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointError("\n".join(lines))


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_into(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Load a checkpoint directory into ``model`` (typically built on the meta device).

    Keys and shapes are checked against the whole checkpoint before anything is assigned,
    then tensors are assigned shard by shard with their stored dtypes.
    """
    check_keys(model, read_shapes(directory), str(directory))
    for path in checkpoint_files(directory):
        tensors = dict(iter_tensors(path))
        for key, tensor in tensors.items():
            check_finite(tensor, key, path)
        model.load_state_dict(tensors, strict=False, assign=True)
    return model


def check_finite(tensor: Tensor, key: str, path: Path) -> None:
    """Name a NaN/inf weight where it is loaded, instead of as non-finite latents after the
    first denoise step. One fp32-accumulated sum per tensor (a NaN or inf anywhere makes it
    non-finite; finite weights cannot overflow it): 2-5x faster than ``isfinite`` on CPU;
    only a non-finite sum pays for the exact count."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        bad = int((~torch.isfinite(tensor)).sum())
        if not bad:  # huge finite weights: a sum past the fp32 range
            return
        raise CheckpointError(f"{path}: tensor {key} has {bad} non-finite values (nan/inf) of {tensor.numel()}")


RowsOf = Callable[[str, Tensor], tuple[Tensor, int]]  # (key, model tensor) -> (destination, first row)


def load_rows_into(model: nn.Module, directory: str | os.PathLike, rows_of: RowsOf) -> nn.Module:
    """Fill every tensor of ``model``'s state dict with the checkpoint rows it holds, and nothing more.

    ``rows_of(key, tensor)`` names where a key goes: a destination tensor on its device and
    the first of the ``len(destination)`` stored rows it receives (``(tensor, 0)`` for a whole
    tensor). Keys, shapes (of the whole tensors) and dtypes are checked first, all at once.
    Rows are read from the file's memory map and copied to the destination one tensor at a
    time. The file is mapped anew for each tensor: pages read through a mapping stay resident
    (and count in RSS) until it is unmapped, so one mapping per file would leave this rank's
    rows of the whole file resident beside their copies. Compressed shards cannot be sliced:
    decompress them first.
    """
    check_keys(model, read_shapes(directory), str(directory))
    targets = model.state_dict(keep_vars=True)
    for path in checkpoint_files(directory):
        if path.name.endswith(ZST):
            raise CheckpointError(f"{path} is zstd compressed; sharded loading reads slices of plain "
                                  f"safetensors: decompress it first (zstd -d --rm {path})")  # fmt: skip
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
            for key in keys:
                destination, start = rows_of(key, targets[key])
                with safe_open(str(path), framework="pt") as f, torch.no_grad():
                    if destination.dim() == 0:
                        destination.copy_(f.get_tensor(key))
                    elif destination.shape[0]:
                        destination.copy_(f.get_slice(key)[start : start + destination.shape[0]])
                check_finite(destination, key, path)  # this rank's rows
        except SafetensorError as e:
            raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {e}") from e
    return model


def build_and_load(factory: Callable[[], nn.Module], directory: str | os.PathLike, device="cpu") -> nn.Module:
    """Build the model with ``factory`` on the meta device, load the checkpoint, move to device."""
    with torch.device("meta"):
        model = factory()
    model = load_into(model, directory)
    # Non-persistent buffers would stay on meta; the DiT has none, so this is a guard.
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise CheckpointError(f"{directory}: some tensors were not loaded")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------
# Writing.


def save_state_dict(
    state_dict: dict[str, Tensor],
    directory: str | os.PathLike,
    max_shard_bytes: int | None = None,
    compress: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model.safetensors`` or an index + shards (optionally ``.zst``), atomically.

    The directory is built beside its destination and renamed into place, so a killed
    save never leaves a half-written checkpoint.
    """
    root = Path(directory)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        shards = _split_shards(tensors, max_shard_bytes) if max_shard_bytes else [tensors]
        if len(shards) == 1 and not max_shard_bytes:
            _write(tmp / SINGLE_FILE, shards[0], compress, metadata)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                _write(tmp / name, shard, compress, metadata)
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _split_shards(tensors: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    shards, current, size = [], {}, 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = t
        size += nbytes
    return shards + [current] if current else shards


def _write(path: Path, tensors: dict[str, Tensor], compress: bool, metadata: dict[str, str] | None) -> None:
    if compress:
        data = save_safetensors_bytes(tensors, metadata=metadata)
        path.with_name(path.name + ZST).write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    else:
        save_file(tensors, str(path), metadata=metadata)
