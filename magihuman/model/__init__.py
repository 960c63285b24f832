"""The DiT, token packing and checkpoint loading."""

from .dit import DiT, DiTConfig, ForwardOptions
from .packing import Modality, Packed, concat, pack, unpack

__all__ = ["DiT", "DiTConfig", "ForwardOptions", "Modality", "Packed", "concat", "pack", "unpack"]
