from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from magihuman.sampling import SamplerConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "sampler"


@pytest.mark.parametrize(
    "name, dit, steps, passes", [("unipc_cfg", "base", 32, 2), ("dmd", "distill", 8, 1), ("sde", "base", 32, 2)]
)
def test_sampler_yaml_builds_config(name, dit, steps, passes):
    """Each sampler runs on the DiT the release pairs it with: DMD on the distilled one, CFG samplers on the base."""
    config = instantiate(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    assert isinstance(config, SamplerConfig)
    assert (config.name, config.dit, config.num_steps, config.cfg_passes) == (name, dit, steps, passes)
    assert config.shift == 5.0
    if passes == 2:
        assert (config.guidance_scale, config.late_guidance_scale, config.audio_guidance_scale) == (5.0, 2.0, 5.0)


def test_sampler_dit_is_validated():
    with pytest.raises(ValueError, match=r"sampler.dit='turbo': expected one of \('base', 'distill'\)"):
        SamplerConfig(dit="turbo")
