"""Wan2.2 video VAE: diffusers ``AutoencoderKLWan`` plus MagiHuman's latent normalization.

Pixels ``[3, F, H, W]`` in [-1, 1] map to normalized latents ``[48, T, H/16, W/16]`` with
``T = (F - 1) // 4 + 1``. Normalization is per channel, ``(mu - mean) / std``, with the 48
Wan2.2 statistics; the encoder returns the posterior mean (no sampling), as the reference does.

Two checkpoint layouts load through the same class:

* ``Wan-AI/Wan2.2-TI2V-5B`` (what the reference configs point at): ``Wan2.2_VAE.pth``, a plain
  state dict in the original Wan module naming. It is renamed to diffusers keys and loaded
  strictly into an ``AutoencoderKLWan`` whose config is read off the tensor shapes.
* ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``: ``vae/config.json`` + safetensors, loaded with
  ``AutoencoderKLWan.from_pretrained``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

WAN22_VAE_FILE = "Wan2.2_VAE.pth"

# Per-channel latent statistics of the Wan2.2 VAE (public Wan2.2 release).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

# Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json: the full-size shape (the tiny release and the
# speed table derive theirs from it).
WAN22_VAE_CONFIG = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=list(WAN22_LATENTS_MEAN),
    latents_std=list(WAN22_LATENTS_STD),
)


@dataclass(frozen=True)
class VideoLatentGeometry:
    """Strides between pixel and latent space (Wan2.2: 4 x 16 x 16, 48 channels)."""

    z_dim: int
    temporal_stride: int
    spatial_stride: int

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[C, T, h, w]`` of the latents for ``num_frames`` frames of ``height x width``."""
        self.check_pixels(num_frames, height, width)
        t = (num_frames - 1) // self.temporal_stride + 1
        return (self.z_dim, t, height // self.spatial_stride, width // self.spatial_stride)

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames`` latent frames (the first is not strided)."""
        return (latent_frames - 1) * self.temporal_stride + 1

    def check_pixels(self, num_frames: int, height: int, width: int) -> None:
        """Raise ValueError unless the clip size is encodable without silently dropping data."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_stride:
            raise ValueError(
                f"num_frames must be {self.temporal_stride}*k + 1 (1, {1 + self.temporal_stride}, "
                f"{1 + 2 * self.temporal_stride}, ...), got {num_frames}"
            )
        if height % self.spatial_stride or width % self.spatial_stride:
            raise ValueError(f"height and width must be multiples of {self.spatial_stride}, got {height}x{width}")


class WanVideoVAE:
    """Encode/decode video with a diffusers ``AutoencoderKLWan`` in MagiHuman's normalized latent space."""

    def __init__(self, model: AutoencoderKLWan):
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.geometry = VideoLatentGeometry(
            z_dim=config.z_dim,
            temporal_stride=config.scale_factor_temporal,
            spatial_stride=config.scale_factor_spatial,
        )
        if len(config.latents_mean) != config.z_dim or len(config.latents_std) != config.z_dim:
            raise ValueError(
                f"latents_mean/std have {len(config.latents_mean)}/{len(config.latents_std)} entries, "
                f"expected z_dim={config.z_dim}"
            )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WanVideoVAE:
        """Load from a ``Wan2.2-TI2V-5B`` directory (``Wan2.2_VAE.pth``) or a diffusers VAE directory."""
        path = Path(path)
        if (path / WAN22_VAE_FILE).is_file():
            model = load_wan22_pth(path / WAN22_VAE_FILE, dtype)
        elif (path / "vae" / "config.json").is_file():
            model = AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=dtype)
        elif (path / "config.json").is_file():
            model = AutoencoderKLWan.from_pretrained(path, dtype=dtype)
        else:
            raise FileNotFoundError(
                f"no Wan2.2 VAE in {path}: expected {WAN22_VAE_FILE} (Wan-AI/Wan2.2-TI2V-5B) "
                "or vae/config.json (Wan-AI/Wan2.2-TI2V-5B-Diffusers)"
            )
        return cls(model.to(device))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and 1/std as ``[C, 1, 1, 1]`` in the model dtype (the reference normalizes in that dtype)."""
        shape = (-1, 1, 1, 1)
        kwargs = dict(device=self.device, dtype=self.dtype)
        mean = torch.tensor(self.model.config.latents_mean, **kwargs).view(shape)
        inv_std = 1.0 / torch.tensor(self.model.config.latents_std, **kwargs).view(shape)
        return mean, inv_std

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[3, F, H, W]`` in [-1, 1] -> normalized latents ``[48, T, H/16, W/16]`` float32."""
        if pixels.ndim != 4 or pixels.shape[0] != 3:
            raise ValueError(f"expected pixels [3, F, H, W], got {tuple(pixels.shape)}")
        self.geometry.check_pixels(*pixels.shape[1:])
        x = pixels.to(device=self.device, dtype=self.dtype).unsqueeze(0)
        mu = self.model.encode(x).latent_dist.mode()[0]
        mean, inv_std = self._stats()
        return ((mu - mean) * inv_std).float()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents ``[48, T, h, w]`` -> pixels ``[3, 4(T-1)+1, 16h, 16w]`` float32 in [-1, 1]."""
        if latents.ndim != 4 or latents.shape[0] != self.geometry.z_dim:
            raise ValueError(f"expected latents [{self.geometry.z_dim}, T, h, w], got {tuple(latents.shape)}")
        mean, inv_std = self._stats()
        z = latents.to(device=self.device, dtype=self.dtype) / inv_std + mean
        return self.model.decode(z.unsqueeze(0)).sample[0].float()


# --- Wan2.2 original checkpoint (Wan2.2_VAE.pth) -> diffusers ---------------------------------

# Parts of a residual block: original ``residual.<i>`` / ``shortcut`` -> diffusers names.
_RESNET_PART = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6"}
_RESNET_PART["conv_shortcut"] = "shortcut"


def wan22_original_key(key: str, num_res_blocks: int) -> str:
    """Original Wan2.2 name of the diffusers ``AutoencoderKLWan`` parameter ``key``.

    The resampler of encoder block i is stored as item ``num_res_blocks`` of that block's
    ``downsamples`` list; the decoder blocks hold one more resnet, so theirs is item
    ``num_res_blocks + 1`` of ``upsamples``.
    """
    rules = (
        (r"quant_conv\.(.*)", r"conv1.\1"),
        (r"post_quant_conv\.(.*)", r"conv2.\1"),
        (r"(encoder|decoder)\.conv_in\.(.*)", r"\1.conv1.\2"),
        (r"(encoder|decoder)\.norm_out\.(.*)", r"\1.head.0.\2"),
        (r"(encoder|decoder)\.conv_out\.(.*)", r"\1.head.2.\2"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", r"\1.middle.1.\2"),
        (r"(encoder|decoder)\.mid_block\.resnets\.0\.(\w+)\.(.*)", r"\1.middle.0.<\2>.\3"),
        (r"(encoder|decoder)\.mid_block\.resnets\.1\.(\w+)\.(.*)", r"\1.middle.2.<\2>.\3"),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", r"encoder.downsamples.\1.downsamples.\2.<\3>.\4"),
        (r"encoder\.down_blocks\.(\d+)\.downsampler\.(.*)", rf"encoder.downsamples.\1.downsamples.{num_res_blocks}.\2"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", r"decoder.upsamples.\1.upsamples.\2.<\3>.\4"),
        (r"decoder\.up_blocks\.(\d+)\.upsampler\.(.*)", rf"decoder.upsamples.\1.upsamples.{num_res_blocks + 1}.\2"),
    )
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            renamed = re.sub(pattern, replacement, key)
            return re.sub(r"<(\w+)>", lambda m: _RESNET_PART[m.group(1)], renamed)
    raise KeyError(f"no Wan2.2 original name for diffusers key {key!r}")


def wan22_config_from_state_dict(state: dict[str, torch.Tensor]) -> dict:
    """``AutoencoderKLWan`` config of an original-format Wan2.2 VAE state dict, read off its shapes."""
    if "encoder.downsamples.0.downsamples.0.residual.0.gamma" not in state:
        raise ValueError("not a Wan2.2 VAE state dict (expected nested encoder.downsamples.<i>.downsamples.<j>)")
    base_dim, in_channels = state["encoder.conv1.weight"].shape[:2]
    out_channels, decoder_width = state["decoder.head.2.weight"].shape[:2]
    num_blocks = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.downsamples."))
    num_res_blocks = sum(f"encoder.downsamples.0.downsamples.{j}.residual.0.gamma" in state for j in range(64))
    first_conv = "encoder.downsamples.{}.downsamples.0.residual.2.weight"  # out width of block i
    dim_mult = [state[first_conv.format(i)].shape[0] // base_dim for i in range(num_blocks)]
    temporal = [
        f"encoder.downsamples.{i}.downsamples.{num_res_blocks}.time_conv.weight" in state for i in range(num_blocks - 1)
    ]
    patch_size = round((in_channels / 3) ** 0.5)
    return dict(
        base_dim=base_dim,
        decoder_base_dim=decoder_width // dim_mult[0],
        z_dim=state["conv2.weight"].shape[0],
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        temperal_downsample=temporal,
        is_residual=True,
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=patch_size,
        scale_factor_temporal=2 ** sum(temporal),
        scale_factor_spatial=patch_size * 2 ** (num_blocks - 1),
        latents_mean=list(WAN22_LATENTS_MEAN),
        latents_std=list(WAN22_LATENTS_STD),
    )


def load_wan22_pth(path: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderKLWan:
    """Build an ``AutoencoderKLWan`` from an original ``Wan2.2_VAE.pth`` (strict: every key must match)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    config = wan22_config_from_state_dict(state)
    with torch.device("meta"):
        model = AutoencoderKLWan(**config)
    names = {wan22_original_key(k, config["num_res_blocks"]): k for k in model.state_dict()}
    missing, unexpected = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    if missing or unexpected:
        raise ValueError(f"{path}: Wan2.2 VAE keys do not match; missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({names[k]: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model


def wan22_to_original_state_dict(model: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` in the original Wan2.2 naming (what ``Wan2.2_VAE.pth`` holds)."""
    num_res_blocks = model.config.num_res_blocks
    return {wan22_original_key(k, num_res_blocks): v.detach().clone() for k, v in model.state_dict().items()}
