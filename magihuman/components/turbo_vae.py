"""The release's turbo video decoder (``turbo_vae/``): a distilled, decoder-only Wan2.2 latent decoder.

The release decodes video with it by default (``use_turbo_vae: true`` in every example config;
the paper's decode times are this decoder). It reads the same normalized 48-channel latents as
the Wan2.2 VAE and writes the same pixels, ``[3, 4(T-1)+1, 16h, 16w]`` in [-1, 1]:

    z * std + mean (Wan2.2 statistics)            [48, T, h, w]
    conv_in                                       widest channels
    mid_block: residual blocks
    up_blocks[0..3]: each opens with a residual block when the width changes, then an
        upsampler (2x space and 2x time, or 2x space only, or none), then residual blocks
        (ReLU at their first activation when they follow an upsampler)
    RMS norm, SiLU, conv_out to 3 x 2 x 2 channels, 2x2 unpatchify

All 3-D convs are non-causal in time with replicate padding; norms are RMS norms without affine.
Long clips are decoded in overlapping windows of latent frames (``first_chunk_size``, then
``step_size`` each, one latent frame of context on each side), exactly as the release does:
the window layout changes the pixels (decoding in one pass differs by rel. L2 0.5), so it is
part of the model, not a memory trick.

Parameter names follow the release's checkpoint (``conv_in.conv.weight``,
``up_blocks.1.upsamplers.0.time_conv.conv.weight``, ...), so its ``decoder.*`` weights load
as they are. Golden parity: ``tests/components/test_turbo_vae.py``.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from magihuman.components.video_vae import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, VideoLatentGeometry

TURBO_CONFIG_FILE = "TurboV3-Wan22-TinyShallow_7_7.json"
TURBO_CHECKPOINT_FILE = "checkpoint-340000.ckpt"
TURBO_SAFETENSORS_FILE = "turbo_vaed.safetensors"  # written by convert_turbo_checkpoint
NORM_EPS = 1e-8  # the release's RMS norms all use 1e-8 except the shortcut's (``resnet_norm_eps``)

# Keys of the release's JSON that do not shape the decoder. Training-only: the feature-matching
# heads of distillation (``aligned_*``; their weights are in the checkpoint and skipped) and the
# encoder's input width. Fixed: options of the public class we support at one value only.
TRAINING_ONLY_KEYS = ("in_channels", "aligned_feature_projection_mode", "aligned_feature_projection_dim",
                      "aligned_blks_indices")  # fmt: skip
FIXED_KEYS = {"scaling_factor": 1.0, "patch_size_t": 1, "decoder_causal": False, "use_unpatchify": True,
              "is_video_dc_ae": False}  # fmt: skip


@dataclass(frozen=True)
class TurboVAEDConfig:
    """Constructor arguments of the release's decoder (the keys of its JSON config); the defaults
    are the release's ``TurboV3-Wan22-TinyShallow_7_7.json`` (107M parameters).

    Lists run from the narrowest (output) stage to the widest, as in the release; the
    decoder walks them in reverse.
    """

    latent_channels: int = 48
    out_channels: int = 3
    decoder_block_out_channels: tuple[int, ...] = (64, 128, 256, 512)
    decoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3)  # 4 up stages, then the mid block
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (False, True, True, True)
    decoder_spatio_only: tuple[bool, ...] = (False, True, False, False)
    decoder_is_dw_conv: tuple[bool, ...] = (False, False, False, False, False)
    decoder_dw_kernel_size: int = 5
    patch_size: int = 2
    resnet_norm_eps: float = 1e-6
    first_chunk_size: int = 7
    step_size: int = 7
    spatial_compression_ratio: int = 16
    temporal_compression_ratio: int = 4

    def __post_init__(self) -> None:
        stages = len(self.decoder_block_out_channels)
        expected = {"decoder_layers_per_block": stages + 1, "decoder_is_dw_conv": stages + 1,
                    "decoder_spatio_temporal_scaling": stages, "decoder_spatio_only": stages}  # fmt: skip
        for name, length in expected.items():
            if len(getattr(self, name)) != length:
                raise ValueError(f"turbo decoder config: {name} needs {length} entries, got {getattr(self, name)}")
        upsamples = sum(self.decoder_spatio_temporal_scaling)
        temporal = upsamples - sum(s and o for s, o in zip(self.decoder_spatio_temporal_scaling, self.decoder_spatio_only))
        if self.patch_size * 2**upsamples != self.spatial_compression_ratio or 2**temporal != self.temporal_compression_ratio:
            raise ValueError(
                f"turbo decoder config: {upsamples} upsamplers ({temporal} temporal) and patch {self.patch_size} give "
                f"strides {2**temporal} x {self.patch_size * 2**upsamples}, but the config says "
                f"{self.temporal_compression_ratio} x {self.spatial_compression_ratio}"
            )
        if self.first_chunk_size < 1 or self.step_size < 1:
            raise ValueError(f"first_chunk_size and step_size must be >= 1, got {self.first_chunk_size}, {self.step_size}")

    @classmethod
    def from_dict(cls, values: dict) -> TurboVAEDConfig:
        """From the release's JSON (diffusers ``_class_name``-style keys are ignored); unknown keys are errors."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if not k.startswith("_")}
        known = names | set(TRAINING_ONLY_KEYS) | set(FIXED_KEYS)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"turbo decoder config: unknown keys {unknown}; known: {sorted(known)}")
        for key, supported in FIXED_KEYS.items():
            if key in values and values[key] != supported:
                raise ValueError(f"turbo decoder config: {key}={values[key]!r} is not supported (the release uses {supported!r})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> TurboVAEDConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


# --- layers ----------------------------------------------------------------------------------


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """RMS norm over channels (dim 1), no affine; statistics in fp32."""
    variance = x.float().pow(2).mean(1, keepdim=True)
    return (x * torch.rsqrt(variance + eps)).to(x.dtype)


class Conv3d(nn.Module):
    """3-D conv, zero-padded in space and replicate-padded in time (non-causal: both sides)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3):
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        self.time_pad = (kt - 1) // 2
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), padding=(0, kh // 2, kw // 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_pad_time(x, self.time_pad))


class SeparableConv3d(nn.Module):
    """Depthwise 3-D conv then a pointwise one (the release's ``decoder_is_dw_conv`` stages)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.time_pad = (kernel_size - 1) // 2
        pad = (0, kernel_size // 2, kernel_size // 2)
        self.depthwise_conv = nn.Conv3d(in_channels, in_channels, kernel_size, padding=pad, groups=in_channels)
        self.pointwise_conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(_pad_time(x, self.time_pad)))


def _pad_time(x: Tensor, pad: int) -> Tensor:
    """Repeat the first and last frame ``pad`` times (``F.pad`` replicate does all three axes)."""
    if pad == 0:
        return x
    return torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)


class ResBlock(nn.Module):
    """norm, act, conv, norm, SiLU, conv, plus a (normed, 1x1x1-conv) shortcut when the width changes.

    ``after_upsampler``: the first activation is ReLU instead of SiLU (the release's choice for
    blocks that follow an upsampler).
    """

    def __init__(self, in_channels: int, out_channels: int, shortcut_eps: float, separable: bool = False,
                 kernel_size: int = 3, after_upsampler: bool = False):  # fmt: skip
        super().__init__()
        conv = (lambda i, o, k: SeparableConv3d(i, o, k)) if separable else Conv3d
        k = kernel_size if separable else 3
        self.first_act = nn.ReLU() if after_upsampler else nn.SiLU()
        self.conv1 = conv(in_channels, out_channels, k)
        self.conv2 = conv(out_channels, out_channels, k)
        self.shortcut_eps = shortcut_eps
        self.conv_shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.first_act(rms_norm(x, NORM_EPS)))
        h = self.conv2(F.silu(rms_norm(h, NORM_EPS)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(rms_norm(x, self.shortcut_eps))
        return h + x


class Upsampler(nn.Module):
    """2x in time (optional: a (3,1,1) conv to twice the channels, interleaved as frame pairs), then
    2x nearest-exact in space and a 3x3 conv per frame.

    The window that starts the clip drops the first of its doubled frames, so ``T`` latent
    frames become ``2T - 1`` there (the first latent frame stands for one pixel frame).
    """

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.time_conv = Conv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None
        # Index 1 of a Sequential, as in the release's key names (``resample.1.weight``).
        self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
                                      nn.Conv2d(channels, channels, 3, padding=1))  # fmt: skip

    def forward(self, x: Tensor, first_window: bool) -> Tensor:
        if self.time_conv is not None:
            b, c, t, h, w = x.shape
            # Channels [2, c] -> time: frame 2i is the first half, frame 2i+1 the second.
            x = self.time_conv(x).view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
            if first_window:
                x = x[:, :, 1:]
        b, c, t, h, w = x.shape
        x = self.resample(x.transpose(1, 2).reshape(b * t, c, h, w))
        return x.view(b, t, c, 2 * h, 2 * w).transpose(1, 2)


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, upsample: str | None,
                 shortcut_eps: float, separable: bool, kernel_size: int):  # fmt: skip
        super().__init__()
        self.conv_in = (
            ResBlock(in_channels, out_channels, shortcut_eps, separable, kernel_size)
            if in_channels != out_channels
            else None
        )
        # A list of one, as in the release's key names (``upsamplers.0``).
        upsamplers = [Upsampler(out_channels, temporal=upsample == "3d")] if upsample else []
        self.upsamplers = nn.ModuleList(upsamplers) if upsample else None
        self.resnets = nn.ModuleList(
            ResBlock(out_channels, out_channels, shortcut_eps, separable, kernel_size, after_upsampler=bool(upsample))
            for _ in range(num_layers)
        )

    def forward(self, x: Tensor, first_window: bool) -> Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        for upsampler in self.upsamplers or ():
            x = upsampler(x, first_window)
        for block in self.resnets:
            x = block(x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, num_layers: int, shortcut_eps: float, separable: bool, kernel_size: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock(channels, channels, shortcut_eps, separable, kernel_size) for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resnets:
            x = block(x)
        return x


# --- the decoder -----------------------------------------------------------------------------


class TurboVAED(nn.Module):
    """The turbo decoder: normalized latents ``[B, 48, T, h, w]`` -> pixels ``[B, 3, 4(T-1)+1, 16h, 16w]``."""

    def __init__(self, config: TurboVAEDConfig):
        super().__init__()
        self.config = c = config
        widths = c.decoder_block_out_channels[::-1]  # widest first
        layers = c.decoder_layers_per_block[::-1]
        separable = c.decoder_is_dw_conv[::-1]
        upsample = [
            ("2d" if only else "3d") if scale else None
            for scale, only in zip(c.decoder_spatio_temporal_scaling[::-1], c.decoder_spatio_only[::-1])
        ]
        eps, k = c.resnet_norm_eps, c.decoder_dw_kernel_size
        self.conv_in = Conv3d(c.latent_channels, widths[0])
        self.mid_block = MidBlock(widths[0], layers[0], eps, separable[0], k)
        self.up_blocks = nn.ModuleList(
            UpBlock(widths[max(i - 1, 0)], widths[i], layers[i + 1], upsample[i], eps, separable[i + 1], k)
            for i in range(len(widths))
        )
        self.conv_out = Conv3d(widths[-1], c.out_channels * c.patch_size**2)
        self.register_buffer("latents_mean", torch.tensor(WAN22_LATENTS_MEAN).view(-1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(WAN22_LATENTS_STD).view(-1, 1, 1, 1), persistent=False)

    def forward(self, z: Tensor, first_window: bool = True) -> Tensor:
        """One window of de-normalized latents -> pixels (``first_window``: the clip's first window)."""
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x, first_window)
        x = self.conv_out(F.silu(rms_norm(x, NORM_EPS)))
        return unpatchify(x, self.config.patch_size)

    def decode(self, latents: Tensor) -> Tensor:
        """Normalized latents ``[B, 48, T, h, w]`` -> pixels, decoded in the release's overlapping windows.

        The clip is padded (last latent frame repeated) to ``first + n * step`` frames; the first
        window takes one frame of right context, the others one frame on each side, and the
        pixels of the context frames are dropped (4 per latent frame). Not clamped.
        """
        c = self.config
        z = (latents * self.latents_std + self.latents_mean).to(latents.dtype)
        first, step, overlap = c.first_chunk_size, c.step_size, c.temporal_compression_ratio
        frames = z.shape[2]
        padding = first - frames if frames < first else -(frames - first) % step
        if padding:
            z = torch.cat([z, z[:, :, -1:].expand(-1, -1, padding, -1, -1)], dim=2)
        total = frames + padding
        if total == first:
            out = self(z, first_window=True)
        else:
            chunks = [self(z[:, :, : first + 1], first_window=True)[:, :, :-overlap]]
            for start in range(first, total, step):
                last = start + step == total
                window = self(z[:, :, start - 1 : start + step + (0 if last else 1)], first_window=False)
                chunks.append(window[:, :, overlap:] if last else window[:, :, overlap:-overlap])
            out = torch.cat(chunks, dim=2)
        return out[:, :, : out.shape[2] - padding * overlap]


def unpatchify(x: Tensor, patch: int) -> Tensor:
    """``[B, C*p*p, T, h, w]`` -> ``[B, C, T, h*p, w*p]``; channel ``c*p*p + pw*p + ph`` (the release's order)."""
    b, cpp, t, h, w = x.shape
    c = cpp // patch**2
    x = x.view(b, c, patch, patch, t, h, w)  # [b, c, pw, ph, t, h, w]
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, t, h * patch, w * patch)


# --- the pipeline's view: same decode interface as WanVideoVAE -------------------------------


class TurboVideoDecoder:
    """Decode-only video component with ``WanVideoVAE.decode``'s interface (``[48, T, h, w]`` in,
    ``[3, F, H, W]`` float32 in [-1, 1] out)."""

    def __init__(self, model: TurboVAED):
        self.model = model.eval().requires_grad_(False)
        c = model.config
        self.geometry = VideoLatentGeometry(c.latent_channels, c.temporal_compression_ratio, c.spatial_compression_ratio)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> TurboVideoDecoder:
        return cls(load_turbo_vaed(path, dtype).to(device))

    @property
    def device(self) -> torch.device:
        return self.model.conv_in.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.conv_in.conv.weight.dtype

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalized latents ``[48, T, h, w]`` -> pixels ``[3, 4(T-1)+1, 16h, 16w]`` float32, clamped to [-1, 1]."""
        if latents.ndim != 4 or latents.shape[0] != self.geometry.z_dim:
            raise ValueError(f"expected latents [{self.geometry.z_dim}, T, h, w], got {tuple(latents.shape)}")
        z = latents.to(device=self.device, dtype=self.dtype).unsqueeze(0)
        return self.model.decode(z)[0].float().clamp(-1, 1)


# --- the release's files ---------------------------------------------------------------------


def load_turbo_vaed(path: str | Path, dtype: torch.dtype = torch.float32) -> TurboVAED:
    """Build the decoder from a ``turbo_vae/`` directory: the JSON config plus the weights.

    Weights come from ``turbo_vaed.safetensors`` when present (see :func:`convert_turbo_checkpoint`),
    else from the release's ``checkpoint-340000.ckpt`` read with ``torch.load(weights_only=True)``.
    Keys must match exactly.
    """
    path = Path(path)
    config_file, ckpt, converted = path / TURBO_CONFIG_FILE, path / TURBO_CHECKPOINT_FILE, path / TURBO_SAFETENSORS_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"no turbo decoder config in {path}: expected {TURBO_CONFIG_FILE}")
    if converted.is_file():
        state = load_file(converted)
    elif ckpt.is_file():
        state = decoder_state_dict(_load_checkpoint(ckpt), ckpt)
    else:
        raise FileNotFoundError(f"no turbo decoder weights in {path}: expected {TURBO_CHECKPOINT_FILE} or {TURBO_SAFETENSORS_FILE}")
    with torch.device("meta"):
        model = TurboVAED(TurboVAEDConfig.from_json(config_file))
    load_strict(model, state, converted if converted.is_file() else ckpt)
    model.to(dtype)
    model.latents_mean, model.latents_std = (  # meta-built buffers: make them real
        torch.tensor(WAN22_LATENTS_MEAN).view(-1, 1, 1, 1), torch.tensor(WAN22_LATENTS_STD).view(-1, 1, 1, 1)
    )
    return model


def _load_checkpoint(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:  # the restricted unpickler refused a global
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise RuntimeError(
            f"{ckpt} cannot be read with torch.load(weights_only=True): it needs arbitrary pickle "
            f"({'it holds ' + blocked.group(1) if blocked else 'a non-tensor object'}). Unpickling can run code, "
            f"so we do not do it silently. If you "
            f"trust the file, convert it once with\n    python -m magihuman.components.turbo_vae --convert-trusted {ckpt.parent}\n"
            f"which writes {TURBO_SAFETENSORS_FILE} next to it; later loads read that instead."
        ) from error


def decoder_state_dict(checkpoint: dict, source: Path | str = "checkpoint") -> dict[str, Tensor]:
    """The decoder's weights from a training checkpoint: ``ema_state_dict``, ``module.decoder.*`` keys.

    Other heads in the checkpoint (anything outside ``decoder.``) are training-only and skipped.
    """
    if "ema_state_dict" not in checkpoint:
        raise KeyError(f"{source}: no 'ema_state_dict' (keys: {sorted(checkpoint)[:10]})")
    prefix = "module.decoder."
    state = {k.removeprefix(prefix): v for k, v in checkpoint["ema_state_dict"].items() if k.startswith(prefix)}
    if not state:
        keys = sorted(checkpoint["ema_state_dict"])[:5]
        raise KeyError(f"{source}: ema_state_dict has no '{prefix}*' keys (first keys: {keys})")
    return state


def load_strict(model: nn.Module, state: dict[str, Tensor], source: Path | str) -> None:
    """Load ``state`` into ``model`` (possibly on meta) only if names and shapes match exactly."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatched = [f"{k}: {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items()
                  if k in state and state[k].shape != s]  # fmt: skip
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: turbo decoder weights do not match the config: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {mismatched[:5]} ({len(mismatched)})"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)


def convert_turbo_checkpoint(path: str | Path) -> Path:
    """One-time, trusted conversion: unpickle ``checkpoint-340000.ckpt`` fully and write the decoder's
    weights as ``turbo_vaed.safetensors`` beside it. Run it only on a file you trust."""
    path = Path(path)
    ckpt = path / TURBO_CHECKPOINT_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = {k: v.contiguous() for k, v in decoder_state_dict(checkpoint, ckpt).items()}
    target = path / TURBO_SAFETENSORS_FILE
    tmp = target.with_suffix(".tmp")
    save_file(state, tmp)
    tmp.replace(target)
    return target


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=convert_turbo_checkpoint.__doc__)
    parser.add_argument("--convert-trusted", type=Path, required=True, metavar="TURBO_VAE_DIR")
    print(convert_turbo_checkpoint(parser.parse_args().convert_trusted))
