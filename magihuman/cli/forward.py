"""``magihuman-forward``: one DiT forward from a checkpoint directory, timed.

With no checkpoint given, the tiny release's base DiT (written once to the cache) is
loaded through the same code that loads the released weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from magihuman.cli.errors import cli_errors
from magihuman.components.tiny import ensure_tiny_release
from magihuman.model import DiT, pack, unpack
from magihuman.model.checkpoint import build_and_load
from magihuman.model.presets import preset


@cli_errors("magihuman-forward")
def main(argv: list[str] | None = None) -> None:
    run(argv)


def run(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, time the forward, print and return the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny", help="architecture preset (tiny, full, full_sr_1080p, ...)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory; default: the tiny release's base DiT")
    parser.add_argument("--cache", type=Path, default=None, help="tiny release cache (default ~/.cache/magihuman/tiny)")
    parser.add_argument("--latent-frames", type=int, default=32, help="5 s at 25 fps -> 32 latent frames")
    parser.add_argument("--latent-size", type=int, nargs=2, default=(16, 28), metavar=("H", "W"))
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    config = preset(args.preset)
    if args.checkpoint is None and args.preset != "tiny":
        parser.error(f"--preset {args.preset} needs --checkpoint DIR (only the tiny preset ships a checkpoint)")
    checkpoint = args.checkpoint or ensure_tiny_release(args.cache).base
    t0 = time.perf_counter()
    model = build_and_load(lambda: DiT(config), checkpoint, device=args.device)
    load_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    t, (h, w) = args.latent_frames, args.latent_size
    video = torch.randn(48, t, h, w, generator=g)
    audio = torch.randn((t - 1) * 4 + 1, config.audio_in_channels, generator=g)
    text = torch.randn(args.text_len, config.text_in_channels, generator=g)
    packed = pack(video, audio, text).to(args.device)

    times = []
    with torch.inference_mode():
        for _ in range(args.repeats + 1):  # first call is warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(packed)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    velocity_video, velocity_audio = unpack(out.cpu(), packed)[0]
    report = {
        "preset": args.preset,
        "checkpoint": str(checkpoint),
        "device": args.device,
        "tokens": int(packed.x.shape[0]),
        "load_s": round(load_s, 4),
        "forward_s_median": round(sorted(times[1:])[len(times[1:]) // 2], 4),
        "velocity_video_shape": list(velocity_video.shape),
        "velocity_audio_shape": list(velocity_audio.shape),
        "finite": bool(torch.isfinite(out).all()),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
