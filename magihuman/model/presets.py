"""Named DiT architectures: the released checkpoints and a tiny one for CPU runs."""

from __future__ import annotations

from .dit import DiTConfig

# Full attention in these layers of the 1080p SR model; every other layer is local.
SR_1080P_FULL_ATTN_LAYERS = (3, 7, 11, 15, 19, 23, 27, 31)

FULL = DiTConfig()  # base and distill share the architecture
FULL_SR_540P = FULL  # full attention everywhere
FULL_SR_1080P = DiTConfig(local_attn_layers=tuple(i for i in range(40) if i not in SR_1080P_FULL_ATTN_LAYERS))

# Same structure as the release (sandwich experts, gelu7 head layers, GQA, gating, local
# layers available) at a size that runs in milliseconds on a CPU.
TINY = DiTConfig(
    num_layers=6,
    hidden_size=128,
    head_dim=32,
    num_query_groups=2,
    text_in_channels=64,  # the tiny T5Gemma encoder width
    mm_layers=(0, 1, 4, 5),
    gelu7_layers=(0, 1),
)
TINY_SR_1080P = DiTConfig(**{**TINY.to_dict(), "local_attn_layers": (1, 2, 4)})

PRESETS: dict[str, DiTConfig] = {
    "full": FULL,
    "full_sr_540p": FULL_SR_540P,
    "full_sr_1080p": FULL_SR_1080P,
    "tiny": TINY,
    "tiny_sr_1080p": TINY_SR_1080P,
}


def preset(name: str) -> DiTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown DiT preset {name!r}; expected one of {sorted(PRESETS)}") from None
