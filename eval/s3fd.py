"""S3FD (Zhang et al. 2017), the face detector of the lip-sync protocol (syncnet_python).

Our module, laid out so the state-dict keys of syncnet_python's ``sfd_face.pth`` load as
they are (``vgg.N``, ``L2Norm3_3``, ``extras.N``, ``loc.N``, ``conf.N``). The file is the
user's: it is never downloaded, and it is read with ``torch.load(weights_only=True)`` (or is
a ``.safetensors`` conversion of it).
Inference follows the protocol's ``detect_faces``: RGB minus the BGR-ordered mean, anchors
of sizes 16..512 at strides 4..128, max-out background on the first head, score threshold,
NMS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from .errors import WeightsUnavailable
from .syncnet import read_state_dict

MEAN_RGB = (123.0, 117.0, 104.0)
STEPS = (4, 8, 16, 32, 64, 128)  # stride of each detection head
ANCHORS = (16, 32, 64, 128, 256, 512)  # square anchor side per head (px)
VARIANCES = (0.1, 0.2)
NMS_IOU = 0.1  # the protocol's (faces of one person overlap; keep one)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


def _vgg() -> list[nn.Module]:
    layers: list[nn.Module] = []
    cin = 3
    for block, (cout, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=block == 2))
    return layers + [nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, 1),
                     nn.ReLU(inplace=True)]  # fmt: skip


class S3FD(nn.Module):
    """VGG16 trunk, L2-normalised conv3_3/4_3/5_3, fc6/fc7, two extra stages; six heads."""

    TAPS = (15, 22, 29)  # vgg indices after which conv3_3, conv4_3, conv5_3 (ReLU'd) are taken

    def __init__(self) -> None:
        super().__init__()
        self.vgg = nn.ModuleList(_vgg())
        self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3 = L2Norm(256, 10), L2Norm(512, 8), L2Norm(512, 5)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, 2, padding=1),
                                     nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, 2, padding=1)])  # fmt: skip
        widths = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList(nn.Conv2d(c, 4, 3, padding=1) for c in widths)
        self.conf = nn.ModuleList(nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1) for i, c in enumerate(widths))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per head: box regressions ``[N, 4, h, w]`` and face probabilities ``[N, h, w]``."""
        norms = dict(zip(self.TAPS, (self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3)))
        sources = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in norms:
                sources.append(norms[i](x))
        sources.append(x)
        for i, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if i % 2:
                sources.append(x)
        locs, probs = [], []
        for i, s in enumerate(sources):
            c = self.conf[i](s)
            if i == 0:  # max-out background: three background logits, one face logit
                c = torch.cat([c[:, :3].amax(1, keepdim=True), c[:, 3:]], 1)
            locs.append(self.loc[i](s))
            probs.append(c.softmax(1)[:, 1])
        return locs, probs


def load_s3fd(path: str | Path | None, device: str = "cpu") -> S3FD:
    """S3FD in eval mode from the user's ``sfd_face.pth`` (a plain state dict, read safely)."""
    if path is None:
        raise WeightsUnavailable(
            "face_detector='s3fd' needs the path to syncnet_python's sfd_face.pth (s3fd_weights=); never downloaded"
        )
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailable(f"S3FD weights not found at {str(p)!r} (expected syncnet_python's sfd_face.pth)")
    state = read_state_dict(p, "sfd_face.safetensors")
    model = S3FD()
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != v.shape for k, v in own.items()):
        raise WeightsUnavailable(f"{str(p)!r} is not the S3FD network of sfd_face.pth (keys {sorted(state)[:5]}...)")
    model.load_state_dict(state)
    return model.to(device).eval()


def _anchors(shapes: list[tuple[int, int]], height: int, width: int) -> torch.Tensor:
    """``[A, 4]`` anchors (cx, cy, w, h) in [0, 1], in the heads' row-major order."""
    out = []
    for (h, w), step, size in zip(shapes, STEPS, ANCHORS):
        cy, cx = torch.meshgrid((torch.arange(h) + 0.5) * step / height, (torch.arange(w) + 0.5) * step / width,
                                indexing="ij")  # fmt: skip
        out.append(torch.stack([cx, cy, torch.full_like(cx, size / width), torch.full_like(cx, size / height)], -1))
    return torch.cat([a.reshape(-1, 4) for a in out])


@torch.no_grad()
def detect(model: S3FD, frames: np.ndarray, threshold: float = 0.8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame of ``frames`` ``[N, H, W, 3]`` RGB uint8: (boxes ``[K, 4]`` px, scores ``[K]``)."""
    device = next(model.parameters()).device
    n, height, width = frames.shape[:3]
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float()
    x = x - torch.tensor(MEAN_RGB, device=device).view(1, 3, 1, 1)
    locs, probs = model(x)
    anchors = _anchors([tuple(p.shape[1:]) for p in probs], height, width).to(device)
    loc = torch.cat([lc.permute(0, 2, 3, 1).reshape(n, -1, 4) for lc in locs], 1)  # [N, A, 4]
    prob = torch.cat([p.reshape(n, -1) for p in probs], 1)  # [N, A]
    centre = anchors[:, :2] + loc[..., :2] * VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    scale = torch.tensor([width, height, width, height], device=device, dtype=torch.float32)
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1) * scale
    out = []
    for b, p in zip(boxes, prob):
        keep = p > threshold
        b, p = b[keep], p[keep]
        idx = batched_nms(b, p, torch.zeros_like(p, dtype=torch.long), NMS_IOU)
        out.append((b[idx].cpu().double().numpy(), p[idx].cpu().double().numpy()))
    return out
