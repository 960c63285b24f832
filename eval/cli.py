"""``magihuman-eval VIDEO [--reference REF] [--metrics a,b] [--syncnet-weights PATH] ...``

Prints one JSON object (the ``score`` result). Non-finite numbers, e.g. PSNR of identical
videos, are written as the strings "inf", "-inf" and "nan" so the output is strict JSON.
Bad inputs exit with status 2 and a one-line message on stderr: among them a still image,
an empty ``--metrics`` and a file that decodes to fewer frames than its container declares
(``--allow-truncated`` scores what is there; the JSON's ``video.truncated`` and
``video.declared_frames`` say so).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

from magihuman.cli.errors import cli_errors

from .api import EvalConfig, score
from .errors import EvalInputError
from .io import has_audio, read_audio, read_video
from .metrics import METRICS


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(result: dict) -> str:
    return json.dumps(_finite(result), allow_nan=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magihuman-eval", description="Score a talking-human clip (video + speech).")
    p.add_argument("video", help="video file (mp4 or anything PyAV reads)")
    p.add_argument("--reference", help="reference video for psnr/ssim/lpips (same frame count and size)")
    p.add_argument("--audio", help="audio file to use instead of the video's own audio stream")
    p.add_argument("--metrics", help=f"comma-separated subset of: {','.join(METRICS)} (default: all that apply)")
    p.add_argument("--syncnet-weights", help="syncnet_v2.model (pickled state dict) or a .safetensors")
    p.add_argument("--lpips-alexnet", help="torchvision alexnet-owt-7be5be79.pth (default: torch hub cache)")
    p.add_argument("--whisper", help="local save_pretrained directory of an ASR model, for wer")
    p.add_argument("--transcript", help="reference transcript, for wer")
    p.add_argument("--clip", help="local save_pretrained directory of a CLIP model, for clip")
    p.add_argument("--prompt", help="text prompt, for clip")
    p.add_argument("--face-detector", choices=["mtcnn", "s3fd", "haar"], default="mtcnn",
                   help="face tracker of av_sync and syncnet (default: mtcnn, weights ship with facenet-pytorch)")
    p.add_argument("--s3fd-weights", help="syncnet_python's sfd_face.pth, for --face-detector s3fd (never downloaded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-truncated", action="store_true",
                   help="score a video that decodes to fewer frames than its container declares (marked truncated)")
    return p


@cli_errors("magihuman-eval")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    if metrics == []:
        parser.error(f"--metrics names no metric; expected a comma-separated subset of {','.join(METRICS)} "
                     "(or leave it out for all that apply)")  # fmt: skip
    config = EvalConfig(
        syncnet_weights=args.syncnet_weights,
        lpips_alexnet=args.lpips_alexnet,
        whisper_dir=args.whisper,
        transcript=args.transcript,
        clip_dir=args.clip,
        prompt=args.prompt,
        face_detector=args.face_detector,
        s3fd_weights=args.s3fd_weights,
        device=args.device,
    )
    try:
        video = read_video(args.video, allow_truncated=args.allow_truncated)
        source = args.audio or (args.video if has_audio(args.video) else None)  # by default the video's own
        audio = None if source is None else read_audio(source, allow_truncated=args.allow_truncated)
        result = score(video, reference=args.reference, audio=audio, metrics=metrics, config=config)
    except EvalInputError as e:
        print(f"magihuman-eval: error: {e}", file=sys.stderr)
        return 2
    result["video"] |= {"declared_frames": video.declared_frames, "truncated": video.truncated}
    print(to_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
