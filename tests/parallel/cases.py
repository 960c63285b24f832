"""Golden DiTs and inputs shared by the parallel tests and their spawned ranks.

The single-process reference (in the pytest process) and the ranks build the same cases
from the same files, so each side only exchanges output tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from magihuman.model import DiT, DiTConfig, Packed, concat, pack
from tests.golden import read_golden

CFG_SIGMA = 0.7
CFG_SCALES = {"scale": 5.0, "audio_scale": 3.0}


@dataclass
class GoldenCase:
    """A golden DiT and its inputs."""

    model: DiT
    video: Tensor  # [1, C, T, H, W]
    audio: Tensor  # [1, Na, Ca]
    text: Tensor  # [Nt, Ct], real tokens only
    coords_style: str
    receptive_field: int

    def pack(self, video: Tensor, audio: Tensor, text: Tensor) -> Packed:
        return pack(video, audio, text, self.coords_style, self.receptive_field)

    def packs(self) -> dict[str, Packed]:
        """The golden sample alone, and two samples of odd total length (padding, sample bounds)."""
        single = self.pack(self.video[0], self.audio[0], self.text)
        other = self.pack(0.5 * self.video[0], self.audio[0].flip(0), self.text[:-1])
        return {"single": single, "two_samples": concat([single, other])}

    def negative_text(self) -> Tensor:
        """A second, shorter text for the uncond rows of CFG."""
        return -self.text[: max(1, self.text.shape[0] - 2)]


def load_case(path: Path, fp32: bool = True) -> GoldenCase:
    """The golden DiT in fp32 (``fp32``) or as released: bf16 linears, fp32 norms and heads."""
    meta, tensors = read_golden(path)
    arch, case = meta["config"]["arch"], meta["config"]["case"]
    model = DiT(DiTConfig.from_dict(arch))
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    return GoldenCase(
        model=(model.float() if fp32 else model).eval(),
        video=tensors["in.latent_video"],
        audio=tensors["in.latent_audio"],
        text=tensors["in.text"][0, : case["text_len"]],
        coords_style=case["coords_style"],
        receptive_field=case["frame_receptive_field"],
    )


def dit_velocity(model: torch.nn.Module, texts: list[Tensor], case: GoldenCase):
    """The pipeline's velocity binding (imported late: the pipeline module is slow to import)."""
    from magihuman.pipeline import dit_velocity

    return dit_velocity(model, texts, case.coords_style, case.receptive_field)
