"""The server's one coupling to :mod:`magihuman.api`: validate a body at submit, run it in a worker.

Everything the server knows about the request schema goes through here, so a change of the
API's entry points is adapted in this file alone.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from magihuman.api import FilePolicy, GenerateRequest, RequestError, default_steps, serve

__all__ = ["RequestError", "media_policy", "validate", "num_steps", "generate", "public_result"]


def media_policy(roots: tuple[str, ...], max_bytes: int) -> FilePolicy:
    """Local media readable under ``roots`` only (none: ``data:`` URIs only), each within ``max_bytes``."""
    return FilePolicy.roots(*roots, max_bytes=max_bytes)


def validate(payload: Any, files: FilePolicy) -> dict[str, Any]:
    """The body to queue, checked by :meth:`GenerateRequest.from_dict` (raises :class:`RequestError`
    naming every bad field). The seed is fixed here, so a request restarted after a crash gives
    the same clip; a local file is read once, here, and queued as a ``data:`` URI of its bytes."""
    request = GenerateRequest.from_dict(payload, files)
    durable = {**payload, "seed": request.seed}
    for field, data, kind in (("image_url", request.image, "image"), ("audio_url", request.audio, "audio")):
        url = payload.get(field)
        if data is not None and not url.lower().startswith("data:"):  # the bytes validation read, never the path again
            durable[field] = _data_uri(data, url, kind)
    return durable


def num_steps(payload: dict[str, Any]) -> int:
    """Base-stage sampler steps of a validated body."""
    return payload.get("num_inference_steps") or default_steps(payload.get("resolution", "256p"))


def generate(pipeline, payload: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Run a queued body (media already inlined) into ``output_dir``; the API's response body,
    whose ``video.url`` is the written file's ``file://`` URL."""
    return serve(payload, pipeline, output_dir, files=FilePolicy.roots())


def _data_uri(data: bytes, name: str, kind: str) -> str:
    mime = mimetypes.guess_type(name)[0] or ""
    if not mime.startswith(kind + "/"):
        mime = "" if kind == "image" else "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def public_result(result: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A stored result with its ``video.url`` (a path on this server) made absolute for ``base_url``."""
    video = {**result["video"], "url": base_url.rstrip("/") + result["video"]["url"]}
    return {**result, "video": video}
