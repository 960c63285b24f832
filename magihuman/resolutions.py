"""The API's resolutions: base size, optional SR stage, and the size written to the mp4.

Sizes are (height, width) in pixels; latent sizes are pixels / 16 and must be even for the
2x2 patch. The base stage always runs at 256p (448x256, SPEC section 2). 540p and 720p
run the 540p SR model and are resized to the nominal size; 1080p runs the 1080p SR model
(local attention) at 1920x1088.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_SIZE = (256, 448)


@dataclass(frozen=True)
class Resolution:
    name: str
    sr_model: str | None  # DiT checkpoint directory of the SR stage, or None (base only)
    sr_size: tuple[int, int] | None  # SR pixel size (a multiple of 32 in both axes)
    output_size: tuple[int, int]  # written to the mp4
    base_size: tuple[int, int] = BASE_SIZE

    def __post_init__(self) -> None:
        for size in (self.base_size, self.sr_size):
            if size is not None and any(s % 32 for s in size):
                raise ValueError(f"{self.name}: {size} is not a multiple of 32 (16x VAE stride x 2x2 patch)")


RESOLUTIONS: dict[str, Resolution] = {
    r.name: r
    for r in (
        Resolution("256p", sr_model=None, sr_size=None, output_size=BASE_SIZE),
        Resolution("540p", sr_model="540p_sr", sr_size=(512, 896), output_size=(540, 960)),
        Resolution("720p", sr_model="540p_sr", sr_size=(704, 1280), output_size=(720, 1280)),
        Resolution("1080p", sr_model="1080p_sr", sr_size=(1088, 1920), output_size=(1088, 1920)),
    )
}


def resolution(name: str) -> Resolution:
    try:
        return RESOLUTIONS[name]
    except KeyError:
        raise ValueError(f"unknown resolution {name!r}; expected one of {list(RESOLUTIONS)}") from None
