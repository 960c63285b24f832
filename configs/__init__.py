"""Hydra configs (groups mirror the objects they build), installed with the package as ``magihuman.configs``.

The YAML groups are the one owner of every default: code that needs a group's object outside a
Hydra app (the API's resolution defaults, the pipeline's default SR stage, library users) builds
it here from the same file the command line composes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent


def build_group(group: str, option: str, **overrides: Any) -> Any:
    """The object ``configs/<group>/<option>.yaml`` builds, with ``overrides`` merged over its keys.

    For self-contained group files (no defaults list, no interpolation: the sampler and sr
    groups). Read with OmegaConf rather than Hydra's compose API so that it also works inside a
    running Hydra app, whose global state compose would need to own.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = CONFIG_DIR / group / f"{option}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise ValueError(f"unknown {group} config {option!r}; expected one of {options}")
    return instantiate(OmegaConf.merge(OmegaConf.load(path), overrides))
