"""Keeping weights off the GPU until they are needed: per component, per layer, and tiled VAE decode.

Each managed module's weights live in host memory (pinned when the device is CUDA, so
copies are asynchronous); the device holds a copy only while it is in use. Weights are
read-only at inference, so leaving the device costs nothing: the device copy is dropped
and the module's tensors become ``meta`` placeholders until the next load. A module used
while evicted therefore fails loudly ("meta tensor") instead of silently running on the host.
Managed parameters are inference-only (``requires_grad=False``) and are replaced, not
mutated, on every load and eviction: hold modules, not parameter objects.

- :class:`ModelOffloader` (``offload=model``): at most one registered component (text
  encoder, a DiT, a VAE) on the GPU; :meth:`~ModelOffloader.prefetch` starts the next
  one's upload on a side stream (only where both fit at once).
- :class:`LayerStreamer` (``offload=layer``): forward hooks on a ``ModuleList``; each layer
  is uploaded just before it runs, the next ``resident_layers - 1`` are prefetched on a side
  CUDA stream, and a layer is evicted as soon as it has run, so the 15B DiT needs about
  two layers (<= 3.3 GB bf16) plus its small outer weights on the GPU.
- :func:`enable_tiled_decode`: spatially tiled Wan2.2 VAE decode (diffusers' tiling).

On a CPU "device" the same code runs: host-to-device copies are no-ops (``Tensor.to``
returns the host tensor itself) and eviction still swaps in meta placeholders, so tests
prove residency on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from magihuman.components.video_vae import WanVideoVAE

OffloadMode = Literal["none", "model", "layer"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "layer")


@dataclass(frozen=True)
class OffloadConfig:
    """Hydra ``offload`` group: where weights wait while they are not in use."""

    mode: OffloadMode = "none"
    resident_layers: int = 2  # layer mode: layers on the GPU at once (the running one + prefetched)
    vae_tiling: bool = False  # decode video in spatial tiles (see enable_tiled_decode)
    mlp_chunk_tokens: int | None = None  # DiT MLPs over at most this many tokens at a time (exact)

    def __post_init__(self) -> None:
        if self.mode not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {self.mode!r}; expected one of {OFFLOAD_MODES}")
        if self.resident_layers < 1:
            raise ValueError(f"resident_layers must be >= 1, got {self.resident_layers}")
        if self.mlp_chunk_tokens is not None and self.mlp_chunk_tokens < 1:
            raise ValueError(f"mlp_chunk_tokens must be >= 1 or null, got {self.mlp_chunk_tokens}")


def _own_tensors(module: nn.Module) -> Iterator[tuple[nn.Module, str, Tensor, bool]]:
    """(owner, name, tensor, is_parameter) for every parameter and buffer under ``module``."""
    for owner in module.modules():
        for name, p in owner._parameters.items():
            if p is not None:
                yield owner, name, p, True
        for name, b in owner._buffers.items():
            if b is not None:
                yield owner, name, b, False


def _assign(owner: nn.Module, name: str, value: Tensor, is_parameter: bool) -> None:
    if is_parameter:  # a new Parameter: ``.data`` cannot change a tensor's device type (to meta)
        owner._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[name] = value


class WeightSlot:
    """A module's weights in host memory, loadable onto a device and evictable to meta placeholders."""

    def __init__(self, module: nn.Module, pin: bool):
        self.module = module
        self._entries = []
        for owner, name, t, is_param in _own_tensors(module):
            host = t.detach().cpu()
            self._entries.append((owner, name, host.pin_memory() if pin else host, is_param))
        self.nbytes = sum(host.numel() * host.element_size() for _, _, host, _ in self._entries)
        self.loaded = False
        self._ready: torch.cuda.Event | None = None

    def load(self, device: torch.device, stream: torch.cuda.Stream | None = None) -> None:
        """Copy the weights to ``device`` (asynchronously on ``stream`` if given; no copy on CPU)."""
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            for owner, name, host, is_param in self._entries:
                _assign(owner, name, host.to(device, non_blocking=True), is_param)
            if stream is not None:
                self._ready = torch.cuda.Event()
                self._ready.record(stream)
        self.loaded = True

    def wait(self) -> None:
        """Make the current stream wait for an asynchronous load and own its tensors from now on."""
        if self._ready is None:
            return
        current = torch.cuda.current_stream()
        current.wait_event(self._ready)
        for owner, name, _, is_param in self._entries:
            tensor = owner._parameters[name] if is_param else owner._buffers[name]
            tensor.record_stream(current)  # freed only after the compute stream is done with it
        self._ready = None

    def evict(self) -> None:
        """Drop the device copy; the module holds meta placeholders until the next load."""
        for owner, name, host, is_param in self._entries:
            _assign(owner, name, torch.empty_like(host, device="meta"), is_param)
        self.loaded = False
        self._ready = None

    def restore(self) -> None:
        """Give the module its host tensors back (it runs on the host again)."""
        for owner, name, host, is_param in self._entries:
            _assign(owner, name, host, is_param)
        self.loaded = False
        self._ready = None


def _side_stream(device: torch.device) -> torch.cuda.Stream | None:
    return torch.cuda.Stream(device) if device.type == "cuda" else None


class ModelOffloader:
    """Whole components by name, at most one on the device (``offload=model``).

    The pipeline registers its components once, then calls :meth:`activate` before each
    stage; the previously active component is evicted first, so peaks never overlap.
    """

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self._stream = _side_stream(self.device)
        self._slots: dict[str, WeightSlot] = {}
        self.active: str | None = None

    def register(self, name: str, module: nn.Module) -> nn.Module:
        slot = WeightSlot(module, pin=self.device.type == "cuda")
        slot.evict()
        self._slots[name] = slot
        return module

    def prefetch(self, name: str) -> None:
        """Start uploading ``name`` on a side stream; it then shares the device with the active one."""
        slot = self._slots[name]
        if not slot.loaded:
            slot.load(self.device, self._stream)

    def activate(self, name: str) -> nn.Module:
        """``name`` on the device (waiting for its prefetch if one is running), every other evicted."""
        for other, slot in self._slots.items():
            if other != name and slot.loaded:
                slot.evict()
        slot = self._slots[name]
        if not slot.loaded:
            slot.load(self.device)
        slot.wait()
        self.active = name
        return slot.module

    def resident(self) -> list[str]:
        return [name for name, slot in self._slots.items() if slot.loaded]

    def release(self) -> None:
        """Evict everything (e.g. before decoding on a small card)."""
        for slot in self._slots.values():
            slot.evict()
        self.active = None


class LayerStreamer:
    """Streams the layers of a ``ModuleList`` through the device, ``resident_layers`` at a time.

    A forward pre-hook loads layer ``i`` (normally already prefetched), makes the compute
    stream wait for its copy, and prefetches layers ``i+1 .. i+resident_layers-1`` (wrapping
    to the next forward's first layers) on a side stream; a forward hook evicts layer ``i``.
    ``bytes_moved`` and ``max_resident`` record what happened, for tests and logs.
    """

    def __init__(self, layers: nn.ModuleList, device: str | torch.device, resident_layers: int = 2):
        if resident_layers < 1:
            raise ValueError(f"resident_layers must be >= 1, got {resident_layers}")
        self.device = torch.device(device)
        self.resident_layers = min(resident_layers, len(layers))
        self._stream = _side_stream(self.device)
        self.slots = [WeightSlot(layer, pin=self.device.type == "cuda") for layer in layers]
        for slot in self.slots:
            slot.evict()
        self.bytes_moved = 0
        self.max_resident = 0
        self._handles = []
        for i, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(partial(self._before, i)))
            self._handles.append(layer.register_forward_hook(partial(self._after, i)))

    def resident(self) -> list[int]:
        return [i for i, slot in enumerate(self.slots) if slot.loaded]

    def _load(self, index: int, stream: torch.cuda.Stream | None) -> None:
        self.slots[index].load(self.device, stream)
        self.bytes_moved += self.slots[index].nbytes

    def _before(self, index: int, module: nn.Module, args) -> None:
        slot = self.slots[index]
        if not slot.loaded:  # the very first layer, or prefetch is off
            self._load(index, None)
        slot.wait()
        for step in range(1, self.resident_layers):
            ahead = (index + step) % len(self.slots)
            if not self.slots[ahead].loaded:
                self._load(ahead, self._stream)
        self.max_resident = max(self.max_resident, len(self.resident()))

    def _after(self, index: int, module: nn.Module, args, output) -> None:
        self.slots[index].evict()

    def remove(self) -> None:
        """Detach the hooks and give every layer its host weights back."""
        for handle in self._handles:
            handle.remove()
        for slot in self.slots:
            slot.restore()


def move_outside(model: nn.Module, layers: nn.ModuleList, device: str | torch.device) -> None:
    """Move every parameter and buffer of ``model`` that is not inside ``layers`` to ``device``."""
    inside = set(layers.modules())
    for module in model.modules():
        if module in inside:
            continue
        for name, p in module._parameters.items():
            if p is not None:
                module._parameters[name] = nn.Parameter(p.detach().to(device), requires_grad=False)
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = b.to(device)


def stream_layers(
    model: nn.Module, layers: nn.ModuleList, device: str | torch.device, resident_layers: int = 2
) -> LayerStreamer:
    """Layer streaming for ``model``: its outer weights on ``device``, ``layers`` streamed.

    DiT: ``stream_layers(dit, dit.block.layers, "cuda")``; the T5Gemma encoder:
    ``stream_layers(te.model, te.model.encoder.layers, "cuda")``.
    """
    move_outside(model, layers, device)
    return LayerStreamer(layers, device, resident_layers)


def enable_tiled_decode(vae: WanVideoVAE, tile: int = 256, stride: int = 192) -> WanVideoVAE:
    """Decode in overlapping ``tile x tile`` pixel tiles, ``stride`` apart, blended over the overlap.

    diffusers' ``AutoencoderKLWan`` tiling: each tile runs the causal decoder over all frames,
    so only one tile's activations are live (the memory planner models the rest: the decoded
    tiles and the stitched clip). Not bit-identical to untiled decode: a tile sees only its
    own latent neighbourhood and overlaps are linearly blended.
    """
    spatial = vae.geometry.spatial_stride
    if tile % spatial or stride % spatial or not 0 < stride <= tile:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be multiples of {spatial} with 0 < stride <= tile")
    vae.model.enable_tiling(
        tile_sample_min_height=tile, tile_sample_min_width=tile, tile_sample_stride_height=stride,
        tile_sample_stride_width=stride,
    )  # fmt: skip
    return vae
