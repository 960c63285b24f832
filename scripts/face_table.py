"""Face detectors side by side on the photograph hard cases (docs/eval.md's table).

``python scripts/face_table.py [--frames 48] [--s3fd-weights sfd_face.pth]`` prints, per
detector x case: detection rate, mean IoU of the tracked box with the true face box, the
roll error, the weights-free AV offset error (frames) and detection time per frame. Times
are single-threaded (torch and OpenCV), the best of ``--repeats`` passes taken in turn
(MTCNN, Haar, MTCNN, ...), so the ratio is side by side; absolute figures depend on the
machine and its load. Without ``sfd_face.pth`` S3FD is timed with random weights (the same
compute, one pass) and its detection columns are left empty.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from magihuman.eval.av_sync import av_sync
from magihuman.eval.errors import MetricUnavailable
from magihuman.eval.face import detect_faces, face_detector, iou, track_face
from magihuman.eval.s3fd import S3FD
from magihuman.eval.synthetic import PHOTO_CASES, photo_clip

SHIFTS = {"upright_large": 3, "small": -2, "tilted": 4, "drifting": -3, "no_face": 2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--s3fd-weights", help="syncnet_python's sfd_face.pth (else: timing only, random weights)")
    args = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    clips = {c: photo_clip(c, SHIFTS[c], num_frames=args.frames) for c in PHOTO_CASES}
    weights, real_s3fd = args.s3fd_weights, args.s3fd_weights is not None
    if weights is None:
        torch.manual_seed(0)
        weights = str(Path(tempfile.mkdtemp()) / "random_sfd_face.pth")
        torch.save(S3FD().state_dict(), weights)
    names = ("mtcnn", "haar", "s3fd")
    detectors = {n: face_detector(n, weights if n == "s3fd" else None) for n in names}
    ms = {}
    for case, clip in clips.items():
        frames = clip.video.frames
        for n in names:
            detect_faces(frames[:2], detectors[n])  # warm-up (first-call allocations)
        for rep in range(args.repeats):
            for n in names if rep == 0 else names[:2]:
                start = time.perf_counter()
                detect_faces(frames, detectors[n])
                took = 1000 * (time.perf_counter() - start) / len(frames)
                ms[n, case] = min(ms.get((n, case), took), took)
    print("| detector | case | detection rate | box IoU | roll error (deg) | AV offset error (frames) | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for case, clip in clips.items():
            frames = clip.video.frames
            if name == "s3fd" and not real_s3fd:
                print(f"| s3fd (random weights) | {case} | | | | | {ms[name, case]:.1f} |")
                continue
            track = track_face(frames, name, weights if name == "s3fd" else None)
            found = track.detected
            box_iou = roll_err = "-"
            if clip.face_boxes is not None and found.any():
                box_iou = f"{np.mean([iou(a, b) for a, b in zip(track.boxes[found], clip.face_boxes[found])]):.2f}"
                roll_err = f"{np.abs(np.rad2deg(track.roll) - clip.roll_deg)[found].mean():.1f}"
            try:
                offset = f"{av_sync(clip.video, clip.audio, track=track).offset_frames - clip.shift_frames:+d}"
            except MetricUnavailable:
                offset = "no number"
            print(f"| {name} | {case} | {track.detection_rate:.0%} | {box_iou} | {roll_err} | {offset} | {ms[name, case]:.1f} |")


if __name__ == "__main__":
    main()
