"""LPIPS (Zhang et al. 2018, AlexNet v0.1) against a reference video, averaged over frames.

The ``lpips`` package ships its calibrated linear heads but takes the AlexNet trunk from
torchvision's ImageNet checkpoint, which it downloads on first use. Offline that cannot
work, so we always build the package's model with a random trunk (no download) and then
load the trunk from a local torchvision checkpoint: an explicit path, or
``alexnet-owt-7be5be79.pth`` in the torch hub cache. Without it we raise
``WeightsUnavailable`` rather than compute anything.

``random_trunk=True`` exists only for plumbing tests; its results are labelled
``lpips_random_trunk`` and are not LPIPS.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsUnavailable
from .io import Video
from .quality import check_same_shape

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# lpips.pretrained_networks.alexnet splits torchvision's alexnet.features into 5 slices
_SLICE_OF_LAYER = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def default_alexnet_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


@dataclass(frozen=True)
class LPIPSResult:
    mean: float
    min: float
    max: float
    num_frames: int
    name: str  # "lpips", or "lpips_random_trunk" for the untrained-trunk plumbing variant


def _quiet_lpips(**kwargs) -> torch.nn.Module:
    """lpips.LPIPS with its prints and torchvision deprecation warnings silenced."""
    import lpips

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net="alex", version="0.1", verbose=False, **kwargs)


def load_lpips(alexnet_path: str | Path | None = None, random_trunk: bool = False, seed: int = 0) -> torch.nn.Module:
    """The LPIPS-Alex model with its trunk from a local checkpoint (or random, for plumbing)."""
    if random_trunk:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return _quiet_lpips(pnet_rand=True)
    path = Path(alexnet_path) if alexnet_path else default_alexnet_path()
    if not path.is_file():
        raise WeightsUnavailable(
            f"LPIPS needs torchvision's ImageNet AlexNet weights ({ALEXNET_FILE}) and cannot download them "
            f"offline; none found at {str(path)!r}. Put the file there or pass its path."
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailable(f"cannot load AlexNet weights from {str(path)!r} safely: {str(e).splitlines()[0][:200]}") from e
    model = _quiet_lpips(pnet_rand=True)
    trunk = {}
    for layer, slice_no in _SLICE_OF_LAYER.items():
        for kind in ("weight", "bias"):
            key = f"features.{layer}.{kind}"
            if key not in state:
                raise WeightsUnavailable(f"{str(path)!r} is not a torchvision AlexNet checkpoint (no {key!r})")
            trunk[f"slice{slice_no}.{layer}.{kind}"] = state[key]
    model.net.load_state_dict(trunk)
    return model.eval()


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` to ``[N, 3, H, W]`` in [-1, 1], the range LPIPS expects."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def lpips_distance(video: Video, reference: Video, model: torch.nn.Module, random_trunk: bool, batch: int = 8) -> LPIPSResult:
    """Per-frame LPIPS between ``video`` and ``reference``, then mean/min/max over frames."""
    check_same_shape(video, reference)
    values = []
    for s in range(0, video.num_frames, batch):
        d = model(_to_tensor(video.frames[s : s + batch]), _to_tensor(reference.frames[s : s + batch]))
        values.append(d.flatten())
    v = torch.cat(values).numpy()
    return LPIPSResult(float(v.mean()), float(v.min()), float(v.max()), len(v), "lpips_random_trunk" if random_trunk else "lpips")
