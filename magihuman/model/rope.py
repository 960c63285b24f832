"""3-D element-wise Fourier rotary embedding.

Every token carries 9 coordinates ``(t, h, w, T, H, W, refT, refH, refW)``: its
position, the size of its grid and a reference size. Positions are rescaled to the
reference grid so that a 1080p SR clip and a 256p base clip see the same angles for
the same relative place in the frame. Angles for the three axes over ``head_dim // 8``
bands give ``3 * 2 * bands`` rotated dims per head (96 of 128 at full size); the rest
of each head passes through unrotated.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_bands(head_dim: int, temperature: float = 10000.0) -> Tensor:
    """Inverse frequencies ``1 / temperature**(i / n)`` for ``i < n = head_dim // 8``."""
    num_bands = head_dim // 8
    exponent = torch.arange(num_bands, dtype=torch.float32) / num_bands
    return 1.0 / temperature**exponent


def fourier_angles(coords: Tensor, bands: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(sin, cos)``, each ``[L, 3 * bands]``: all t angles, then h, then w.

    h and w are centred on their grid (time is not) and scaled by
    ``(ref - 1) / (size - 1)``; an axis of size 1 gets scale 1. With a reference of 1 too that
    is the release's rule; with another reference (one SR text token: size 1, reference 2) the
    ratio is undefined, and :func:`check_rope_coords` admits it only at position 0, where any
    scale gives the same zero angle.
    """
    coords = coords.float()
    position, size, ref = coords[:, 0:3], coords[:, 3:6], coords[:, 6:9]
    scale = torch.where(size == 1, torch.ones_like(size), (ref - 1) / (size - 1))
    centre = (size - 1) / 2
    centre[:, 0] = 0.0
    angles = ((position - centre) * scale).unsqueeze(-1) * bands.float()  # [L, 3, bands]
    return angles.sin().flatten(1), angles.cos().flatten(1)


def check_rope_coords(coords: Tensor) -> None:
    """Refuse coordinates whose angle is undefined: an axis of size 1 with a reference other
    than 1 has no scale, which only its position 0 (angle 0 at any scale) can do without.

    Run where coordinates are made (on the host), not in the forward: reading the verdict of a
    device tensor is a host sync.
    """
    position, size, ref = coords[:, 0:3], coords[:, 3:6], coords[:, 6:9]
    if bool(((size == 1) & (ref != 1) & (position != 0)).any()):
        raise ValueError("rotary coordinates have size 1 with a reference size other than 1 at a position other than 0")


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate the first ``2 * sin.shape[-1]`` dims of each head (half-split, not interleaved).

    x: ``[L, heads, head_dim]`` (fp32); sin, cos: ``[L, n]``.
    """
    n = sin.shape[-1]
    rotated, passthrough = x[..., : 2 * n], x[..., 2 * n :]
    first, second = rotated[..., :n], rotated[..., n:]
    sin, cos = sin.unsqueeze(1), cos.unsqueeze(1)
    rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    return torch.cat((rotated, passthrough), dim=-1)
