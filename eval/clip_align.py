"""Text-frame alignment with a user-supplied local CLIP checkpoint.

Score per frame = 100 * max(cos(image, text), 0) (the torchmetrics CLIPScore convention),
averaged over up to ``max_frames`` frames sampled evenly through the clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import EvalInputError
from .io import Video, require_model_dir


@dataclass(frozen=True)
class ClipAlignment:
    clip_score: float  # mean of 100 * max(cos, 0)
    mean_cosine: float
    num_frames: int
    prompt: str


@torch.no_grad()
def clip_alignment(video: Video, prompt: str, model_dir: str | Path, max_frames: int = 16, device: str = "cpu") -> ClipAlignment:
    from transformers import CLIPModel, CLIPProcessor

    if not prompt.strip():
        raise EvalInputError("clip alignment needs a non-empty text prompt")
    p = require_model_dir(model_dir, "the CLIP model")
    model = CLIPModel.from_pretrained(str(p)).to(device).eval()
    processor = CLIPProcessor.from_pretrained(str(p))
    idx = np.unique(np.linspace(0, video.num_frames - 1, min(max_frames, video.num_frames)).round().astype(int))
    inputs = processor(text=[prompt], images=list(video.frames[idx]), return_tensors="pt", padding=True, truncation=True)
    out = model(**{k: v.to(device) for k, v in inputs.items()})
    img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
    txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
    cos = (img @ txt.T).squeeze(-1).cpu()
    return ClipAlignment(float((100 * cos.clamp_min(0)).mean()), float(cos.mean()), len(idx), prompt)
