"""Golden DiTs and inputs shared by the parallel tests and their spawned ranks.

The single-process reference (in the pytest process) and the ranks build the same cases
from the same files, so each side only exchanges output tensors. Besides the golden files
of ``MAGIHUMAN_GOLDEN_DIR`` every parallel test runs on two more files in the same format:
a DiT with a single KV group (random weights, local attention layers), which context
parallelism over 2 ranks can only run by replicating its KV head, and the same DiT with a
single text token (SR coordinates: its one text token has reference 2, size 1).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from magihuman.model import DiT, DiTConfig, Packed, concat, pack
from magihuman.model.dit import init_weights
from magihuman.model.presets import TINY_SR_1080P
from tests.golden import golden_files, read_golden

CASES_DIR = Path.home() / ".cache" / "magihuman" / "parallel"
ONE_KV_GROUP = CASES_DIR / "dit_one_kv_group_v1.safetensors"
# One KV group and a single text token: the second sample and CFG's negative text keep that one token.
ONE_TEXT_TOKEN = CASES_DIR / "dit_one_kv_group_one_text_token_v1.safetensors"
GENERATED = {ONE_KV_GROUP: 5, ONE_TEXT_TOKEN: 1}  # file -> its text tokens

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
        """The golden sample alone, and two samples of odd total length (padding, sample bounds):
        the second has one token fewer, of text unless the text is a single token, else of audio."""
        single = self.pack(self.video[0], self.audio[0], self.text)
        audio, text = self.audio[0].flip(0), self.text
        audio, text = (audio, text[:-1]) if len(text) > 1 else (audio[:-1], text)
        other = self.pack(0.5 * self.video[0], audio, text)
        return {"single": single, "two_samples": concat([single, other])}

    def negative_text(self) -> Tensor:
        """A second, shorter text for the uncond rows of CFG."""
        return -self.text[: max(1, self.text.shape[0] - 2)]


def parallel_params() -> list[Path]:
    """Every golden DiT, and the generated ones (written by :func:`ensure_cases` when needed)."""
    return [*golden_files("dit_*.safetensors"), *GENERATED]


def ensure_cases(paths: list[Path]) -> list[Path]:
    """Write the generated cases that are asked for and missing; return ``paths``."""
    for path, text_len in GENERATED.items():
        if path in paths and not path.is_file():
            write_one_kv_group_case(path, text_len=text_len)
    return paths


def write_one_kv_group_case(path: Path, seed: int = 0, text_len: int = 5) -> Path:
    """A golden-format file (``weights.*``, ``in.*``, ``config`` metadata) of a DiT with one KV group."""
    arch = replace(TINY_SR_1080P, num_query_groups=1)  # 4 query heads, 1 KV head, local layers 1, 2, 4
    model = init_weights(DiT(arch), seed)
    case = {"T": 3, "H": 4, "W": 6, "audio_len": 9, "text_len": text_len, "coords_style": "v1",
            "frame_receptive_field": 1}  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["in.latent_video"] = torch.randn(1, arch.video_in_channels // 4, case["T"], case["H"], case["W"],
                                             generator=generator)  # fmt: skip
    tensors["in.latent_audio"] = torch.randn(1, case["audio_len"], arch.audio_in_channels, generator=generator)
    tensors["in.text"] = torch.randn(1, case["text_len"], arch.text_in_channels, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"config": json.dumps({"arch": arch.to_dict(), "case": case})})
    tmp.replace(path)
    return path


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
