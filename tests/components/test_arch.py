"""The architecture registry builds what the checkpoints hold: same keys, shapes and dtypes."""

import pytest
import torch

from magihuman.components.arch import DIT_NAMES, build_dit, random_components, release_arch
from magihuman.model import DiT
from magihuman.model.checkpoint import build_and_load


def shapes(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def test_tiny_arch_on_meta_matches_the_tiny_release(tiny_release, tiny_components):
    """Built on meta from the registry, every tiny component has exactly the loaded checkpoint's tensors."""
    built = random_components("tiny", "meta")
    for name in ("text_encoder", "video_vae", "audio_vae", "video_decoder"):
        loaded = getattr(tiny_components, name).model
        assert shapes(getattr(built, name).model) == shapes(loaded), name
    arch = release_arch("tiny")
    assert set(arch.dits) == set(DIT_NAMES)
    for name, config in arch.dits.items():
        directory = tiny_release.root / name
        loaded = build_and_load(lambda c=config: DiT(c), directory)
        assert shapes(build_dit(config, "meta")) == shapes(loaded), name


def test_random_components_run_and_are_seeded():
    a, b = random_components("tiny", seed=3), random_components("tiny", seed=3)
    latents = torch.randn(48, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.video_decoder.decode(latents), b.video_decoder.decode(latents))
    text = a.text_encoder.encode("hello")
    assert text.shape[-1] == a.text_encoder.hidden_size and torch.isfinite(text).all()


def test_full_arch_sizes_on_meta_allocate_nothing():
    """The release's sizes: 15B-class DiTs (28.5 GiB bf16), a 9.2B-parameter T5Gemma encoder, built
    on meta in well under a second each; a wrong name is refused by name."""
    components = random_components("full", "meta", torch.bfloat16)
    params = sum(p.numel() for p in components.text_encoder.model.parameters())
    assert 9.0e9 < params < 9.5e9
    dit = build_dit(release_arch("full").dits["1080p_sr"], "meta")
    assert all(p.is_meta for p in dit.parameters())
    assert 15.0e9 < sum(p.numel() for p in dit.parameters()) < 15.5e9
    with pytest.raises(ValueError, match="unknown release architecture 'huge'"):
        release_arch("huge")
