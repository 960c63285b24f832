"""The DiT as a sampler velocity: batch rows packed once per stage, one forward per step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..clip import FRAME_RECEPTIVE_FIELD
from ..model import DiT, Packed, concat, pack, unpack
from ..model.dit import ForwardOptions, TokenLayout
from ..model.packing import write_latents
from .guidance import Velocity


def dit_velocity(
    model: nn.Module,
    texts: list[Tensor],
    coords_style: str,
    receptive_field: int = FRAME_RECEPTIVE_FIELD,
    calls=None,  # anything with a `forwards` counter (the pipeline's DiTCalls)
    device: torch.device | None = None,
    options: ForwardOptions = ForwardOptions(),
) -> Velocity:
    """Bind texts to batch rows: row ``i`` uses ``texts[i // (B / len(texts))]`` (cond rows, then uncond).

    All rows run as ONE forward: the samples are concatenated into one packed sequence,
    packed once per stage on ``device`` (default: the model's), and the
    model's token layout is built once with it; each later call only writes the new latents
    into it, so a step moves nothing between host and device. ``options`` say how the forward
    runs (the layout carries them; a wrapper such as context parallel gets them per call).
    ``calls``, if given, counts the forwards.
    """
    device = device or next(model.parameters()).device
    template: Packed | None = None  # packed on the first call; later calls only write latents
    layout: TokenLayout | None = None  # DiT.layout(template): host work done once per stage

    def velocity(video: Tensor, audio: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        nonlocal template, layout
        video, audio = video.to(device), audio.to(device)
        rows_per_text = video.shape[0] // len(texts)
        if template is None or len(template.samples) != video.shape[0]:
            packs = [pack(video[i], audio[i], texts[i // rows_per_text].to(device), coords_style, receptive_field)
                     for i in range(video.shape[0])]  # fmt: skip
            template = concat(packs)
            layout = model.layout(template, options) if isinstance(model, DiT) else None  # wrappers build their own
        else:
            for i in range(video.shape[0]):
                write_latents(template, i, video[i], audio[i])
        if calls is not None:
            calls.forwards += 1
        outputs = unpack(model(template, options) if layout is None else model(template, layout), template)
        v_video = torch.stack([v for v, _ in outputs]).to(video.dtype)
        v_audio = torch.stack([a for _, a in outputs]).to(audio.dtype)
        return v_video, v_audio

    return velocity
