"""``magihuman-generate``: one clip from the command line (Hydra).

    magihuman-generate prompt="..." mode=ti2v mode.image=face.png resolution=256p
    magihuman-generate model=full model.paths=/ckpt/daVinci-MagiHuman sampler=dmd

Prints the API's response (:class:`magihuman.api.GenerateResponse`: video file, size, seed, the
clip's duration and, for A2V, why it is shorter than asked) as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from magihuman.api import GenerateResponse
from magihuman.cli.errors import cli_errors
from magihuman.harness.prompts import build_request

CONFIG_PATH = "pkg://magihuman.configs"  # configs/, installed with the package


@cli_errors("magihuman-generate")
@hydra.main(config_path=CONFIG_PATH, config_name="generate", version_base="1.3")
@cli_errors("magihuman-generate")
def main(cfg: DictConfig) -> None:
    request = build_request(cfg, output=Path(cfg.output))  # every input checked before a model loads
    pipeline = instantiate(cfg.model)
    result = pipeline.generate(request, output=Path(cfg.output))
    if result.path is None:  # a rank other than 0 of a parallel launch: rank 0 writes and reports
        return
    print(json.dumps(GenerateResponse.of(result, request.duration).to_dict(), indent=2))


if __name__ == "__main__":
    main()
