"""A real ``magihuman-serve`` (tiny model, CPU, self-signed TLS made in the test's state
directory) driven by the unmodified official ``fal-client``."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from magihuman.serve.process import CLIENT_ENV, ServerProcess, fal_client_for

pytest.importorskip("fal_client")

APP = "fal-ai/davinci-magihuman"
ALICE = "alice:" + "a" * 32
BOB = "bob:" + "b" * 32


def face_uri(size: int = 96) -> str:
    """A small PNG as a data: URI (the only media form the server accepts over the network)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 80)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def arguments(**overrides) -> dict:
    """A cheap request: 1 s at 256p, one distilled step."""
    return {"prompt": "A woman says hello.", "image_url": face_uri(), "duration": 1, "num_inference_steps": 1,
            "seed": 7, **overrides}  # fmt: skip


def start_server(directory: Path, *overrides: str) -> ServerProcess:
    keys = directory / "keys"
    if not keys.exists():
        keys.write_text(f"{ALICE}\n{BOB}\n")
        keys.chmod(0o600)
    return ServerProcess([f"server.state_dir={directory / 'state'}", f"server.api_keys_file={keys}",
                          "server.port=0", "server.run_port=0", *overrides], cwd=directory).start()  # fmt: skip


def use_server(server: ServerProcess):
    return fal_client_for(server.env)


@pytest.fixture(scope="module")
def restore_client_env():
    saved = {name: os.environ.get(name) for name in CLIENT_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
