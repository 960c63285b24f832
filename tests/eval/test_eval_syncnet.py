"""SyncNet LSE pipeline: architecture, protocol MFCCs, safe weight loading, end to end."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from magihuman.eval import EvalConfig, score
from magihuman.eval.errors import EvalInputError, MetricUnavailable, WeightsUnavailable
from magihuman.eval.face import track_face
from magihuman.eval.io import Video
from magihuman.eval.mfcc import mfcc
from magihuman.eval.syncnet import SyncNet, face_crops, load_syncnet, lse, save_state_dict_safetensors


@pytest.fixture(scope="module")
def random_syncnet() -> SyncNet:
    torch.manual_seed(0)
    return SyncNet().eval()


def _plain_state(model: SyncNet) -> collections.OrderedDict:
    """What the public file holds: an OrderedDict of tensors without BN counters."""
    return collections.OrderedDict((k, v.clone()) for k, v in model.state_dict().items() if "num_batches_tracked" not in k)


def test_tower_shapes(random_syncnet):
    with torch.no_grad():
        assert random_syncnet.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert random_syncnet.forward_lip(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)


def test_state_dict_keys_match_reference_layout(random_syncnet):
    keys = set(random_syncnet.state_dict())
    # module indices of syncnet_python's S model (conv, bn, relu, pool ...)
    for k in ["netcnnaud.0.weight", "netcnnaud.18.weight", "netcnnaud.19.running_var", "netcnnlip.0.weight",
              "netcnnlip.18.weight", "netfcaud.0.weight", "netfcaud.3.weight", "netfclip.1.running_mean"]:
        assert k in keys
    assert random_syncnet.netcnnlip[0].weight.shape == (96, 3, 5, 7, 7)
    assert random_syncnet.netcnnaud[18].weight.shape == (512, 256, 5, 4)


def test_mfcc_matches_python_speech_features():
    """Golden rows computed with python_speech_features 0.6 ``mfcc(x, 16000)`` on this signal."""
    t = np.arange(8000) / 16000
    x = np.round(8000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1250 * t) * (t > 0.2)).astype(np.int16)
    m = mfcc(x.astype(np.float64))
    assert m.shape == (49, 13)  # 100 Hz
    golden = {
        0: [19.06122932, 18.80477164, 1.71080219, -14.17596614, -27.20787129, -33.51640299, -29.67685096,
            -18.56954605, -3.26068932, 10.02483266, 18.04463421, 17.9827272, 11.90807382],
        30: [19.81807094, 15.21874773, -13.80026271, -22.15242804, -10.4766083, -9.2197802, -29.62746606,
             -43.19350723, -19.18992016, 23.32258519, 41.2055694, 21.01266592, -5.1849645],
    }
    for row, values in golden.items():
        np.testing.assert_allclose(m[row], values, atol=1e-6)


def test_crops_are_protocol_sized(talking_clip):
    crops = face_crops(talking_clip.video.frames[:3], track_face(talking_clip.video.frames[:3]))
    assert crops.shape == (3, 224, 224, 3) and crops.dtype == np.uint8


def test_lse_end_to_end_with_random_weights(make_clip, random_syncnet):
    c = make_clip(0, num_frames=40)
    r = lse(c.video, c.audio, random_syncnet)
    assert r.num_windows == 40 - 5
    assert r.offsets == list(range(15, -16, -1))
    assert len(r.mean_distances) == 31
    assert np.all(np.isfinite(r.mean_distances))
    assert r.lse_d == pytest.approx(min(r.mean_distances))
    assert r.lse_c == pytest.approx(float(np.median(r.mean_distances)) - r.lse_d, abs=1e-5)
    assert r.lse_c >= 0
    assert -15 <= r.offset_frames <= 15
    assert r.resampled_from_fps is None


def test_lse_retimes_non_25fps_video(make_clip, random_syncnet):
    from magihuman.eval.io import Video

    c = make_clip(0, num_frames=40)
    v30 = Video(c.video.frames[np.minimum(np.arange(48) * 25 // 30, 39)], 30.0)
    r = lse(v30, c.audio, random_syncnet)
    assert r.resampled_from_fps == 30.0
    assert r.num_windows == 35


@pytest.mark.parametrize("zipfile", [True, False])
def test_loads_pickled_state_dict_with_weights_only(tmp_path, random_syncnet, zipfile):
    path = tmp_path / "syncnet_v2.model"
    torch.save(_plain_state(random_syncnet), path, _use_new_zipfile_serialization=zipfile)
    loaded = load_syncnet(path)
    assert not loaded.training
    assert torch.equal(loaded.netcnnlip[0].weight, random_syncnet.netcnnlip[0].weight)


def test_safetensors_conversion_round_trip(tmp_path, random_syncnet):
    path = tmp_path / "syncnet.safetensors"
    save_state_dict_safetensors(_plain_state(random_syncnet), path)
    assert torch.equal(load_syncnet(path).netfcaud[3].bias, random_syncnet.netfcaud[3].bias)
    with pytest.raises(EvalInputError, match="dict of tensors"):
        save_state_dict_safetensors(random_syncnet, tmp_path / "x.safetensors")


def test_pickled_module_is_refused_with_conversion_advice(tmp_path, random_syncnet):
    path = tmp_path / "module.model"
    torch.save(random_syncnet, path)
    with pytest.raises(WeightsUnavailable, match="weights_only=True.*save_state_dict_safetensors"):
        load_syncnet(path)


def test_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "other.model"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsUnavailable, match="does not match the SyncNet architecture"):
        load_syncnet(path)


def test_score_without_weights_reports_unavailable_never_a_number(talking_clip):
    c = talking_clip
    out = score(c.video.frames, audio=(c.audio.mono, c.audio.sample_rate), metrics=["syncnet"], fps=25)
    entry = out["metrics"]["syncnet"]
    assert entry["available"] is False
    assert "weights" in entry["reason"]
    assert not {"lse_d", "lse_c", "offset_frames"} & set(entry)
    out = score(c.video, audio=c.audio, metrics=["syncnet"], config=EvalConfig(syncnet_weights="/nonexistent/syncnet_v2.model"))
    assert out["metrics"]["syncnet"]["available"] is False
    assert "not found" in out["metrics"]["syncnet"]["reason"]


def test_score_with_weights_file(tmp_path, make_clip, random_syncnet):
    path = tmp_path / "syncnet_v2.model"
    torch.save(_plain_state(random_syncnet), path)
    c = make_clip(0, num_frames=40)
    entry = score(c.video, audio=c.audio, metrics=["syncnet"], config=EvalConfig(syncnet_weights=path))["metrics"]["syncnet"]
    assert entry["available"] is True
    assert np.isfinite(entry["lse_d"]) and np.isfinite(entry["lse_c"])


def test_no_face_gives_no_lse_number(make_clip, random_syncnet):
    c = make_clip(0)
    noise = np.random.default_rng(1).integers(0, 256, size=c.video.frames.shape, dtype=np.uint8)
    with pytest.raises(MetricUnavailable, match="SyncNet needs a face: one was detected in 0% of the frames"):
        lse(Video(noise, c.video.fps), c.audio, random_syncnet)
