"""SyncNet LSE-D / LSE-C, the standard lip-sync metrics (Chung & Zisserman 2016).

Follows the syncnet_python evaluation protocol (``SyncNetInstance.evaluate`` fed by
``run_pipeline`` crops), which is also what Wav2Lip/LatentSync report as LSE:

* video at 25 fps, audio mono 16 kHz; MFCC 13 x 100 Hz (see ``eval.mfcc``);
* a face track, cropped per frame to a square around the (smoothed) box with
  crop_scale 0.4, padded with grey 110, resized to 224x224, BGR, values 0..255;
* lip tower input: 5 consecutive frames ``[3, 5, 224, 224]``; audio tower input: the
  matching 20 MFCC frames ``[1, 13, 20]`` (4 MFCC frames per video frame);
* for each video window, the L2 distance to audio windows shifted by -15..+15 frames
  (audio features zero-padded at the ends); the mean over windows gives 31 distances;
* LSE-D = min of those means, LSE-C = median - min, offset = 15 - argmin
  (positive: video frame t matches audio frame t - offset, i.e. the video lags).

The public ``syncnet_v2.model`` is a pickled state dict; it is loaded with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import EvalInputError, WeightsUnavailable
from .face import DetectorName, FaceTrack, require_face, track_face, upright
from .io import Audio, Video, resample_audio, resample_video_fps
from .mfcc import float_to_int16_scale, mfcc

FPS = 25
SAMPLE_RATE = 16000
WINDOW = 5  # video frames per lip-tower input
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
CROP_SIZE = 224
CROP_SCALE = 0.4
PAD_VALUE = 110
V_SHIFT = 15


def _conv_bn_relu2d(cin: int, cout: int, k: tuple[int, int], pad: tuple[int, int]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=pad), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv_bn_relu3d(cin: int, cout: int, k: tuple[int, int, int], stride=(1, 1, 1), pad=(0, 0, 0)) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, k, stride=stride, padding=pad), nn.BatchNorm3d(cout), nn.ReLU()]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """syncnet_python's ``S`` model; module indices match its state-dict keys.

    Audio tower: ``[N, 1, 13, 20]`` MFCC -> 512 -> ``embed_dim``.
    Lip tower: ``[N, 3, 5, 224, 224]`` BGR 0..255 -> 512 -> ``embed_dim``.
    """

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu2d(1, 64, (3, 3), (1, 1)),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu2d(64, 192, (3, 3), (1, 1)),
            nn.MaxPool2d(3, stride=(1, 2)),
            *_conv_bn_relu2d(192, 384, (3, 3), (1, 1)),
            *_conv_bn_relu2d(384, 256, (3, 3), (1, 1)),
            *_conv_bn_relu2d(256, 256, (3, 3), (1, 1)),
            nn.MaxPool2d(3, stride=(2, 2)),
            *_conv_bn_relu2d(256, 512, (5, 4), (0, 0)),
        )
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu3d(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(96, 256, (1, 5, 5), stride=(1, 2, 2), pad=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), pad=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), pad=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), pad=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, frame_windows: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frame_windows).flatten(1))


# ---------------------------------------------------------------- weights


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNet:
    """A SyncNet in eval mode with weights from ``.safetensors`` or a pickled state dict.

    Raises ``WeightsUnavailable`` with the reason if the file is missing, is not a plain
    state dict (``torch.load(weights_only=True)`` refuses it), or does not fit the model.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailable(f"SyncNet weights not found at {str(p)!r} (expected syncnet_v2.model or a .safetensors)")
    state = read_state_dict(p, "syncnet_v2.safetensors")
    model = SyncNet()
    _assign(model, state, p)
    return model.to(device).eval()


def read_state_dict(p: Path, converted_name: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file, or a pickled plain state dict read with ``weights_only=True``;
    anything else raises ``WeightsUnavailable`` saying how to convert it (to ``converted_name``)."""
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # the safe unpickler raises several types
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsUnavailable(
            f"{str(p)!r} is not a plain tensor state dict, so torch.load(weights_only=True) refused it ({first_line}). "
            "If you trust the file, load it yourself once (torch.load(..., weights_only=False), take "
            ".state_dict() if it is a module) and write it with magihuman.eval.syncnet.save_state_dict_safetensors(state, "
            f"{converted_name!r}), then pass that file."
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"{str(p)!r} does not hold a dict of tensors (got {type(state).__name__})")
    return state


def _assign(model: SyncNet, state: dict[str, torch.Tensor], p: Path) -> None:
    """Copy tensors in, tolerating a ``__S__.``/``module.`` prefix and absent BN counters."""
    clean = {}
    for k, v in state.items():
        for prefix in ("__S__.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        clean[k] = v
    own = model.state_dict()
    missing = [k for k in own if k not in clean and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in clean if k not in own]
    bad_shape = [k for k in own if k in clean and clean[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        raise WeightsUnavailable(
            f"{str(p)!r} does not match the SyncNet architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {bad_shape[:5]}"
        )
    with torch.no_grad():
        for k, v in clean.items():
            own[k].copy_(v)


def save_state_dict_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write an already-loaded SyncNet state dict as ``.safetensors`` (tensors only)."""
    from safetensors.torch import save_file

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalInputError("save_state_dict_safetensors needs a dict of tensors (a state dict), not a model object")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


# ---------------------------------------------------------------- inputs


def face_crops(frames_rgb: np.ndarray, track: FaceTrack) -> np.ndarray:
    """``[T, 224, 224, 3]`` BGR uint8 crops: the protocol's box expansion around the track,
    of the frame de-rotated by the track's roll (an upright face: the protocol's crop)."""
    out = np.empty((len(frames_rgb), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for t, (frame, box, roll) in enumerate(zip(frames_rgb, track.boxes, track.roll)):
        frame = upright(frame, box, roll)
        bs = max(box[2] - box[0], box[3] - box[1]) / 2  # half the box size
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        pad = int(bs * (1 + 2 * CROP_SCALE))
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        my, mx = cy + pad, cx + pad
        rows = slice(int(my - bs), int(my + bs * (1 + 2 * CROP_SCALE)))  # box top to well below the chin
        cols = slice(int(mx - bs * (1 + CROP_SCALE)), int(mx + bs * (1 + CROP_SCALE)))
        face = padded[rows, cols]
        out[t] = cv2.resize(cv2.cvtColor(face, cv2.COLOR_RGB2BGR), (CROP_SIZE, CROP_SIZE))
    return out


def audio_mfcc(audio: Audio) -> tuple[np.ndarray, int]:
    """``[13, M]`` protocol MFCCs (16 kHz mono, int16 scale) and the whole video frames it spans."""
    x = resample_audio(audio, SAMPLE_RATE)
    return mfcc(float_to_int16_scale(x), SAMPLE_RATE).T, len(x) // (SAMPLE_RATE // FPS)


# ---------------------------------------------------------------- metric


@dataclass(frozen=True)
class LSEResult:
    lse_d: float  # min over offsets of the mean embedding distance (lower is better)
    lse_c: float  # median minus min of those means (higher is better)
    offset_frames: int  # positive: video lags audio
    num_windows: int
    offsets: list[int]  # the 31 offsets searched, +V_SHIFT .. -V_SHIFT
    mean_distances: list[float]  # mean embedding distance at each of ``offsets``
    face_detection_rate: float
    resampled_from_fps: float | None  # set when the video was retimed to 25 fps


@torch.no_grad()
def embed(
    model: SyncNet, crops_bgr: np.ndarray, cc: np.ndarray, audio_frames: int, batch_size: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings ``[W, D]`` for every 5-frame window (W = frames - 5)."""
    num_frames = min(len(crops_bgr), audio_frames)
    num_windows = num_frames - WINDOW  # as the protocol: the last full window is not used
    if num_windows < 1:
        raise EvalInputError(f"SyncNet needs more than {WINDOW} frames of video and audio; got {num_frames}")
    device = next(model.parameters()).device
    vid = torch.from_numpy(crops_bgr[:num_frames]).permute(3, 0, 1, 2).float()  # [3, T, H, W]
    aud = torch.from_numpy(cc).float()[None]  # [1, 13, M]
    lips, auds = [], []
    for start in range(0, num_windows, batch_size):
        idx = range(start, min(num_windows, start + batch_size))
        lips.append(model.forward_lip(torch.stack([vid[:, i : i + WINDOW] for i in idx]).to(device)).cpu())
        windows = [aud[:, :, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + 4 * WINDOW] for i in idx]
        auds.append(model.forward_aud(torch.stack(windows).to(device)).cpu())
    return torch.cat(lips), torch.cat(auds)


def offset_distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = V_SHIFT) -> torch.Tensor:
    """``[W, 2*vshift+1]``: distance of lip window i to audio window i + j - vshift (zero-padded)."""
    padded = F.pad(aud, (0, 0, vshift, vshift))
    span = 2 * vshift + 1
    return torch.stack([F.pairwise_distance(lip[[i]].expand(span, -1), padded[i : i + span]) for i in range(len(lip))])


def lse(video: Video, audio: Audio, model: SyncNet, track: FaceTrack | None = None, detector: DetectorName = "mtcnn",
        s3fd_weights: str | Path | None = None) -> LSEResult:  # fmt: skip
    """LSE-D, LSE-C and the detected offset of ``video`` against ``audio``.

    ``track``: the face track of ``video`` at 25 fps; without one (or when the video is
    retimed to 25 fps) the face is tracked here with ``detector``.
    """
    resampled_from = None if abs(video.fps - FPS) < 1e-6 else video.fps
    video = resample_video_fps(video, FPS)
    if track is None or len(track.boxes) != video.num_frames:
        track = track_face(video.frames, detector, s3fd_weights, str(next(model.parameters()).device))
    require_face(track, "SyncNet")
    cc, audio_frames = audio_mfcc(audio)
    lip, aud = embed(model, face_crops(video.frames, track), cc, audio_frames)
    mean = offset_distances(lip, aud).mean(dim=0)
    min_val, min_idx = torch.min(mean, 0)
    return LSEResult(
        lse_d=float(min_val),
        lse_c=float(torch.median(mean) - min_val),
        offset_frames=V_SHIFT - int(min_idx),
        num_windows=len(lip),
        offsets=[V_SHIFT - j for j in range(len(mean))],
        mean_distances=[float(x) for x in mean],
        face_detection_rate=track.detection_rate,
        resampled_from_fps=resampled_from,
    )
