"""Packing video, audio and text into one token sequence, and back.

One sample becomes ``[video tokens, audio tokens, text tokens]``; every token is zero
padded in channels to the widest modality and carries a modality id (which selects the
expert weights and the adapter) and 9 rotary coordinates. Several samples (e.g. the
cond and uncond passes of CFG) are concatenated into one :class:`Packed` sequence with
per-sample attention bounds, so one forward serves the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import torch
from torch import Tensor

from magihuman.clip import FRAME_RECEPTIVE_FIELD, PATCH, ClipShape

from .rope import check_rope_coords

CoordsStyle = Literal["v1", "v2"]


class Modality(IntEnum):
    VIDEO = 0
    AUDIO = 1
    TEXT = 2


# ---------------------------------------------------------------------------------------
# Video patchify: input tokens are (C, pH, pW) ordered, output tokens (pH, pW, C).


def patchify(latent: Tensor) -> Tensor:
    """``[C, T, H, W]`` -> ``[T * H/2 * W/2, C * 4]`` with channels in (C, pH, pW) order."""
    c, t, h, w = latent.shape
    if h % PATCH[1] or w % PATCH[2]:
        raise ValueError(f"video latent height and width must be even for the 2x2 patch, got {h}x{w}")
    x = latent.reshape(c, t, h // 2, 2, w // 2, 2)
    return x.permute(1, 2, 4, 0, 3, 5).reshape(t * (h // 2) * (w // 2), c * 4)


def unpatchify(tokens: Tensor, channels: int, grid: tuple[int, int, int]) -> Tensor:
    """``[T * Hp * Wp, 4 * C]`` in (pH, pW, C) order -> ``[C, T, 2 Hp, 2 Wp]``.

    The model's output head is laid out (pH, pW, C), unlike its (C, pH, pW) input.
    """
    t, hp, wp = grid
    x = tokens.reshape(t, hp, wp, 2, 2, channels)
    return x.permute(5, 0, 1, 3, 2, 4).reshape(channels, t, hp * 2, wp * 2)


# ---------------------------------------------------------------------------------------
# Rotary coordinates: (t, h, w, T, H, W, refT, refH, refW) per token.


def video_coords(grid: tuple[int, int, int]) -> Tensor:
    """Row-major (t, h, w) positions on the patch grid; the reference size is the grid."""
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    position = torch.stack((tt, hh, ww), dim=-1).reshape(-1, 3).float()
    size = torch.tensor([t, h, w], dtype=torch.float32).expand(position.shape[0], 3)
    return torch.cat((position, size, size), dim=1)


def audio_coords(num_audio: int, video_frames: int, style: CoordsStyle) -> Tensor:
    """Audio on its own time axis, rescaled to the video's latent frame count.

    v2 derives the reference from the audio length (the clip's latent frames, :class:`ClipShape`); v1 uses the
    video's latent frame count directly.
    """
    ref_t = ClipShape(num_audio).latent_frames if style == "v2" else video_frames
    return _line_coords(torch.arange(num_audio).float(), ref_t)


def text_coords(num_text: int, style: CoordsStyle) -> Tensor:
    """v2: positions ``-Nt..-1`` with reference 1 (zero rotation); v1: ``0..Nt-1``, reference 2."""
    if style == "v2":
        return _line_coords(torch.arange(-num_text, 0).float(), ref_t=1)
    return _line_coords(torch.arange(num_text).float(), ref_t=2)


def _line_coords(t: Tensor, ref_t: int) -> Tensor:
    coords = torch.zeros(t.shape[0], 9)
    coords[:, 0] = t
    coords[:, 3:6] = torch.tensor([t.shape[0], 1.0, 1.0])
    coords[:, 6:9] = torch.tensor([float(ref_t), 1.0, 1.0])
    return coords


# ---------------------------------------------------------------------------------------
# Local attention: latent frame i's video tokens see video frames [i - rf, i + rf + 1)
# plus all audio and text; audio and text tokens see everything.


def local_attention_ranges(
    grid: tuple[int, int, int], num_other: int, receptive_field: int
) -> tuple[Tensor, Tensor]:
    """(q_ranges, k_ranges), each ``[n, 2]`` int32 ``[start, end)`` pairs of one sample.

    A query range may appear in several pairs; its keys are the union of their key ranges.
    """
    t, hp, wp = grid
    per_frame = hp * wp
    num_video = t * per_frame
    total = num_video + num_other
    q, k = [], []
    for i in range(t):
        q.append((i * per_frame, (i + 1) * per_frame))
        lo, hi = max(i - receptive_field, 0), min(i + receptive_field + 1, t)
        k.append((lo * per_frame, hi * per_frame))
    q.append((0, num_video))
    k.append((num_video, total))
    q.append((num_video, total))
    k.append((0, total))
    return torch.tensor(q, dtype=torch.int32), torch.tensor(k, dtype=torch.int32)


def attention_segments(q_ranges: Tensor, k_ranges: Tensor) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Split possibly overlapping query ranges into disjoint segments with their key ranges."""
    pairs = list(zip(q_ranges.tolist(), k_ranges.tolist()))
    bounds = sorted({b for (qs, qe), _ in pairs for b in (qs, qe)})
    segments = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        keys = [tuple(kr) for (qs, qe), kr in pairs if qs <= start and end <= qe]
        if keys:
            segments.append((start, end, keys))
    return segments


# ---------------------------------------------------------------------------------------
# The packed sequence.


@dataclass(frozen=True)
class SampleLayout:
    """Where one sample lives in the packed sequence and how to unpack it."""

    offset: int
    grid: tuple[int, int, int]  # video patch grid (T, H/2, W/2)
    num_video: int
    num_audio: int
    num_text: int
    latent_channels: int
    audio_channels: int
    local_q_ranges: Tensor  # relative to ``offset``
    local_k_ranges: Tensor

    @property
    def length(self) -> int:
        return self.num_video + self.num_audio + self.num_text


@dataclass
class Packed:
    """A token sequence of one or more samples, ready for :class:`~magihuman.model.dit.DiT`."""

    x: Tensor  # [L, C] float32, channels zero padded
    coords: Tensor  # [L, 9] float32
    modality: Tensor  # [L] int64
    samples: list[SampleLayout] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.x.to(device), self.coords.to(device), self.modality.to(device), self.samples)


def pack(
    video: Tensor,
    audio: Tensor,
    text: Tensor,
    coords_style: CoordsStyle = "v2",
    frame_receptive_field: int = FRAME_RECEPTIVE_FIELD,
) -> Packed:
    """Pack one sample: video latent ``[C, T, H, W]``, audio latent ``[Na, Ca]``, text ``[Nt, Ct]``.

    Text must already be trimmed to its real length. The tokens stay on the inputs' device;
    coordinates and modality ids are made on the host, checked, and moved there once.
    """
    if video.dim() != 4 or audio.dim() != 2 or text.dim() != 2:
        raise ValueError(
            f"pack expects video [C,T,H,W], audio [Na,Ca], text [Nt,Ct]; got "
            f"{list(video.shape)}, {list(audio.shape)}, {list(text.shape)}"
        )
    if text.shape[0] == 0:
        raise ValueError("pack needs at least one text token")
    c, t, h, w = video.shape
    grid = (t, h // PATCH[1], w // PATCH[2])
    video_tokens = patchify(video.float())
    parts = (video_tokens, audio.float(), text.float())
    width = max(p.shape[1] for p in parts)
    x = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
    coords = torch.cat(
        (video_coords(grid), audio_coords(audio.shape[0], t, coords_style), text_coords(text.shape[0], coords_style))
    )
    check_rope_coords(coords)
    modality = torch.cat([torch.full((p.shape[0],), int(m)) for p, m in zip(parts, Modality)])
    q_ranges, k_ranges = local_attention_ranges(grid, audio.shape[0] + text.shape[0], frame_receptive_field)
    layout = SampleLayout(
        offset=0,
        grid=grid,
        num_video=video_tokens.shape[0],
        num_audio=audio.shape[0],
        num_text=text.shape[0],
        latent_channels=c,
        audio_channels=audio.shape[1],
        local_q_ranges=q_ranges,
        local_k_ranges=k_ranges,
    )
    return Packed(x=x, coords=coords.to(x.device), modality=modality.to(x.device), samples=[layout])


def concat(packs: list[Packed]) -> Packed:
    """Concatenate packed samples into one sequence; attention never crosses samples."""
    samples, offset = [], 0
    for p in packs:
        for s in p.samples:
            samples.append(SampleLayout(**{**s.__dict__, "offset": offset + s.offset}))
        offset += p.x.shape[0]
    return Packed(
        x=torch.cat([p.x for p in packs]),
        coords=torch.cat([p.coords for p in packs]),
        modality=torch.cat([p.modality for p in packs]),
        samples=samples,
    )


def write_latents(packed: Packed, index: int, video: Tensor, audio: Tensor) -> None:
    """Overwrite sample ``index``'s video and audio rows in place; the layout (coordinates,
    modality ids, text rows, attention ranges) stays. A sampler packs once per stage and
    only writes the latents each step, on whatever device ``packed`` lives."""
    s = packed.samples[index]
    packed.x[s.offset : s.offset + s.num_video, : 4 * s.latent_channels] = patchify(video.float())
    start = s.offset + s.num_video
    packed.x[start : start + s.num_audio, : s.audio_channels] = audio.float()


def unpack(out: Tensor, packed: Packed) -> list[tuple[Tensor, Tensor]]:
    """Model output ``[L, C]`` -> per sample ``(velocity_video [C,T,H,W], velocity_audio [Na,Ca])``."""
    results = []
    for s in packed.samples:
        video = out[s.offset : s.offset + s.num_video, : 4 * s.latent_channels]
        audio_start = s.offset + s.num_video
        audio = out[audio_start : audio_start + s.num_audio, : s.audio_channels]
        results.append((unpatchify(video, s.latent_channels, s.grid), audio))
    return results
