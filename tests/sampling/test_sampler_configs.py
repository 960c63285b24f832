from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from magihuman.sampling import SamplerConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "sampler"


@pytest.mark.parametrize(
    "name, steps, passes", [("unipc_cfg", 32, 2), ("dmd", 8, 1), ("sde", 32, 2)]
)
def test_sampler_yaml_builds_config(name, steps, passes):
    config = instantiate(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    assert isinstance(config, SamplerConfig)
    assert (config.name, config.num_steps, config.shift, config.cfg_passes) == (name, steps, 5.0, passes)
    if passes == 2:
        assert (config.guidance_scale, config.late_guidance_scale, config.audio_guidance_scale) == (5.0, 2.0, 5.0)
