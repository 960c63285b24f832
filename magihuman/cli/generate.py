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
from magihuman.harness.prompts import build_request
from magihuman.inputs import RequestError

CONFIG_PATH = "pkg://magihuman.configs"  # configs/, installed with the package


@hydra.main(config_path=CONFIG_PATH, config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        request = build_request(cfg, output=Path(cfg.output))  # every input checked before a model loads
    except RequestError as error:
        raise SystemExit(f"magihuman-generate: {error}") from None
    pipeline = instantiate(cfg.model)
    result = pipeline.generate(request, output=Path(cfg.output))
    if result.path is None:  # a rank other than 0 of a parallel launch: rank 0 writes and reports
        return
    print(json.dumps(GenerateResponse.of(result, request.duration).to_dict(), indent=2))


if __name__ == "__main__":
    main()
