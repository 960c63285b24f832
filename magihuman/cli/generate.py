"""``magihuman-generate``: one clip from the command line (Hydra).

    magihuman-generate prompt="..." mode=ti2v mode.image=face.png resolution=256p
    magihuman-generate model=full_distill model.paths=/ckpt/daVinci-MagiHuman

Prints the API-style response (video file, size, seed) as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from magihuman.api import RequestError
from magihuman.cli.errors import cli_errors
from magihuman.harness.prompts import build_request

CONFIG_PATH = "pkg://magihuman.configs"  # configs/, installed with the package


@cli_errors("magihuman-generate")
@hydra.main(config_path=CONFIG_PATH, config_name="generate", version_base="1.3")
@cli_errors("magihuman-generate")
def main(cfg: DictConfig) -> None:
    try:
        request = build_request(cfg, output=Path(cfg.output))  # every input checked before a model loads
    except RequestError as error:
        raise SystemExit(f"magihuman-generate: {error}") from None
    pipeline = instantiate(cfg.model)
    result = pipeline.generate(request, output=Path(cfg.output))
    if result.path is None:  # a rank other than 0 of a parallel launch: rank 0 writes and reports
        return
    response = {
        "video": {
            "url": result.path.resolve().as_uri(),
            "content_type": "video/mp4",
            "file_name": result.path.name,
            "file_size": result.path.stat().st_size,
        },
        "seed": result.seed,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
    }
    print(json.dumps(response, indent=2))


if __name__ == "__main__":
    main()
