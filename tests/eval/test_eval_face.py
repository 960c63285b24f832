"""Face tracking on hard cases made by code: a real photograph (scikit-image's astronaut)
talking with a known offset, placed large, small, tilted, drifting, or out of frame.

For each case: detection rate, IoU of the track with the true face box, the roll, and the
recovered offset of the weights-free metric and of SyncNet's input crops (within one frame).
A no-face clip yields no number. Clips are 48 frames at 256p, generated once per module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magihuman.eval import EvalConfig, EvalInputError, score
from magihuman.eval.av_sync import av_sync, envelope_change, lagged_correlation
from magihuman.eval.errors import WeightsUnavailable
from magihuman.eval.face import face_detector, iou, track_face, upright
from magihuman.eval.s3fd import S3FD, load_s3fd
from magihuman.eval.synthetic import photo_clip
from magihuman.eval.syncnet import SyncNet, face_crops, lse

SHIFTS = {"upright_large": 3, "small": -2, "tilted": 4, "drifting": -3, "no_face": 2}
FACES = [c for c in SHIFTS if c != "no_face"]


@pytest.fixture(scope="module")
def clips():
    return {case: photo_clip(case, shift) for case, shift in SHIFTS.items()}


@pytest.fixture(scope="module")
def tracks(clips):
    return {case: track_face(c.video.frames, "mtcnn") for case, c in clips.items()}


def test_the_small_case_is_at_most_a_third_of_the_frame(clips):
    for case in ("small", "tilted", "drifting"):
        boxes = clips[case].face_boxes
        assert (boxes[:, 3] - boxes[:, 1]).max() <= 256 / 3 + 1e-6
    assert 15 <= clips["tilted"].roll_deg.min() - 2.7 and clips["tilted"].roll_deg.max() - 2.7 <= 30


@pytest.mark.parametrize("case", FACES)
def test_mtcnn_tracks_the_true_face(clips, tracks, case):
    clip, track = clips[case], tracks[case]
    assert track.source == "mtcnn" and track.detection_rate >= 0.95
    ious = [iou(a, b) for a, b in zip(track.boxes, clip.face_boxes)]
    assert np.mean(ious) > 0.6 and min(ious) > 0.4, f"{case}: IoU with the true face box {np.mean(ious):.2f}"
    roll_error = np.abs(np.rad2deg(track.roll) - clip.roll_deg)
    assert roll_error.mean() < 5, f"{case}: roll off by {roll_error.mean():.1f} degrees"


@pytest.mark.parametrize("case", FACES)
def test_weights_free_offset_is_recovered(clips, tracks, case):
    clip = clips[case]
    r = av_sync(clip.video, clip.audio, track=tracks[case])
    assert abs(r.offset_frames - clip.shift_frames) <= 1, f"{case}: {r.offset_frames} for a true {clip.shift_frames}"


@pytest.mark.parametrize("case", FACES)
def test_syncnet_crops_carry_the_mouth_at_the_true_offset(clips, tracks, case):
    """SyncNet plumbing: the 224x224 crops it is fed (de-rotated, protocol box expansion) show
    the mouth, so their mouth-area motion lines up with the speech at the clip's offset."""
    clip = clips[case]
    crops = face_crops(clip.video.frames, tracks[case]).astype(np.float32).mean(-1)
    mouth = crops[:, 95:150, 67:157]  # below the nose, between the cheeks, in every crop
    motion = np.r_[0.0, np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2))]
    lags, corr = lagged_correlation(motion, envelope_change(clip.audio, clip.video.fps, clip.video.num_frames), 15)
    assert abs(lags[np.nanargmax(corr)] - clip.shift_frames) <= 1


def test_syncnet_runs_on_the_shared_track_with_random_weights(clips, tracks):
    torch.manual_seed(0)
    clip = clips["drifting"]
    r = lse(clip.video, clip.audio, SyncNet().eval(), tracks["drifting"])
    assert r.num_windows == 48 - 5 and np.isfinite(r.mean_distances).all() and r.face_detection_rate >= 0.95


def test_a_tilted_head_gives_the_upright_mouth_crop(clips, tracks):
    """De-rotated by its tracked roll, the tilted face's open mouth is level: the long axis of
    the dark-red cavity (image moments) turns from the head's tilt to within a few degrees of 0."""
    clip, track = clips["tilted"], tracks["tilted"]
    t = int(np.argmin(np.abs(clip.mouth_opening - 0.3)))  # a slit 4x wider than high: a clear long axis
    frame, box = clip.video.frames[t], track.boxes[t]
    x0, y0, x1, y1 = box.round().astype(int)

    def cavity_angle(image: np.ndarray) -> float:
        lower_face = image[(y0 + y1) // 2 : y1, x0:x1]
        r, g, b = (lower_face[..., i].astype(int) for i in range(3))
        cavity = (r < 90) & (g < 40) & (r - g > 20) & (b > g)  # its (45, 12, 18): not the black suit, not brown hair
        ys, xs = np.nonzero(cavity)
        xs, ys = xs - xs.mean(), ys - ys.mean()
        return float(np.rad2deg(0.5 * np.arctan2(2 * (xs * ys).mean(), (xs**2).mean() - (ys**2).mean())))

    assert cavity_angle(frame) == pytest.approx(clip.roll_deg[t], abs=5)  # tilted as drawn (clockwise: +)
    assert abs(cavity_angle(upright(frame, box, float(track.roll[t])))) < 4


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_no_face_clip_yields_no_number(clips, detector):
    clip = clips["no_face"]
    entry = score(clip.video, audio=clip.audio, metrics=["av_sync"], config=EvalConfig(face_detector=detector))
    entry = entry["metrics"]["av_sync"]
    assert entry["available"] is False and "needs a face" in entry["reason"] and "offset_frames" not in entry
    assert entry["face_detector"] == detector


def test_haar_fallback_still_finds_the_large_upright_face(clips):
    clip = clips["upright_large"]
    track = track_face(clip.video.frames, "haar")
    assert track.source == "haar" and track.detection_rate >= 0.95 and not track.roll.any()
    assert av_sync(clip.video, clip.audio, track=track).offset_frames == clip.shift_frames


def test_unknown_detector_is_refused():
    with pytest.raises(EvalInputError, match=r"face_detector must be one of \['mtcnn', 's3fd', 'haar'\]; got 'retina'"):
        EvalConfig(face_detector="retina")


# ---------------------------------------------------------------- S3FD from the user's file


@pytest.fixture(scope="module")
def sfd_face(tmp_path_factory):
    """A randomly initialised S3FD state dict where the user's sfd_face.pth would be."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("s3fd") / "sfd_face.pth"
    torch.save(S3FD().state_dict(), path)
    return path


def test_s3fd_loads_the_users_file_and_detects_per_frame(sfd_face):
    model = load_s3fd(sfd_face)
    saved = torch.load(sfd_face, weights_only=True)
    assert not model.training and torch.equal(model.conf[0].weight, saved["conf.0.weight"])
    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)
    found = face_detector("s3fd", str(sfd_face))(frames)
    assert len(found) == 2 and all(d.boxes.shape[1:] == (4,) and len(d.scores) == len(d.boxes) for d in found)
    assert all((d.scores > 0.8).all() for d in found)  # the protocol's score threshold


def test_s3fd_errors_name_the_file_and_what_was_expected(tmp_path, sfd_face):
    with pytest.raises(WeightsUnavailable, match="needs the path to syncnet_python's sfd_face.pth"):
        load_s3fd(None)
    with pytest.raises(WeightsUnavailable, match="S3FD weights not found at .*missing.pth"):
        load_s3fd(tmp_path / "missing.pth")
    other = tmp_path / "syncnet_v2.model"
    torch.save(SyncNet().state_dict(), other)
    with pytest.raises(WeightsUnavailable, match="is not the S3FD network of sfd_face.pth"):
        load_s3fd(other)
    pickled = tmp_path / "module.pth"
    torch.save(S3FD(), pickled)
    with pytest.raises(WeightsUnavailable, match=r"weights_only=True\) refused it.*'sfd_face.safetensors'"):
        load_s3fd(pickled)


def test_s3fd_without_its_file_makes_the_lip_sync_metric_unavailable(clips):
    clip = clips["upright_large"]
    config = EvalConfig(face_detector="s3fd", s3fd_weights="/nowhere/sfd_face.pth")
    entry = score(clip.video, audio=clip.audio, metrics=["av_sync"], config=config)["metrics"]["av_sync"]
    assert entry["available"] is False and "S3FD weights not found" in entry["reason"]
    assert entry["face_detector"] == "s3fd"


@pytest.mark.gpu
def test_detectors_run_on_the_eval_device(clips, tracks, sfd_face):
    """On CUDA, MTCNN tracks the same face as on the CPU, and S3FD runs there too."""
    clip = clips["drifting"]
    on_gpu = track_face(clip.video.frames, "mtcnn", device="cuda")
    assert on_gpu.detection_rate == tracks["drifting"].detection_rate
    assert np.abs(on_gpu.boxes - tracks["drifting"].boxes).max() < 2.0  # px
    assert len(face_detector("s3fd", str(sfd_face), "cuda")(clip.video.frames[:2])) == 2
