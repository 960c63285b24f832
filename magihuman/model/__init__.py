"""The DiT, token packing and checkpoint loading."""

from .dit import DiT, DiTConfig
from .packing import Modality, Packed, concat, pack, unpack

__all__ = ["DiT", "DiTConfig", "Modality", "Packed", "concat", "pack", "unpack"]
