"""magihuman-eval on inputs that are not what they claim: a cut-off mp4, a still image, no metric."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image

from magihuman.eval.cli import main
from magihuman.eval.errors import EvalInputError
from magihuman.eval.io import read_video


def cut_off(src: str, dst, keep: float) -> None:
    """``src`` remuxed with its index first (faststart), then cut to ``keep`` of its bytes: a
    download or copy that stopped early (the container still declares every frame)."""
    full = dst.with_suffix(".full.mp4")
    with av.open(src) as inp, av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    data = full.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory, talking_mp4):
    path = tmp_path_factory.mktemp("cut") / "cut.mp4"
    cut_off(talking_mp4, path, keep=0.8)
    return path


def test_a_truncated_video_is_an_error(truncated_mp4, capsys):
    with pytest.raises(EvalInputError, match="declares 75 frames but only .* decode"):
        read_video(truncated_mp4)
    assert main([str(truncated_mp4), "--metrics", "flicker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "declares 75 frames" in err and "--allow-truncated" in err


def test_a_truncated_video_is_scored_and_marked_when_allowed(truncated_mp4, talking_mp4, capsys):
    assert main([str(truncated_mp4), "--metrics", "flicker", "--allow-truncated"]) == 0
    video = json.loads(capsys.readouterr().out)["video"]
    assert video["truncated"] is True and video["declared_frames"] == 75 and 0 < video["num_frames"] < 75
    assert main([talking_mp4, "--metrics", "flicker"]) == 0
    video = json.loads(capsys.readouterr().out)["video"]
    assert video["truncated"] is False and video["declared_frames"] == video["num_frames"] == 75


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_still_image_is_not_a_video(tmp_path, capsys, suffix):
    path = tmp_path / f"face{suffix}"
    Image.fromarray(np.full((64, 48, 3), 128, np.uint8)).save(path)
    with pytest.raises(EvalInputError, match="is a still image .*, not a video"):
        read_video(path)
    assert main([str(path)]) == 2
    assert "is a still image" in capsys.readouterr().err


@pytest.mark.parametrize("metrics", ["", " , "])
def test_an_empty_metric_list_is_an_error(talking_mp4, capsys, metrics):
    with pytest.raises(SystemExit) as done:
        main([talking_mp4, "--metrics", metrics])
    assert done.value.code == 2 and "--metrics names no metric" in capsys.readouterr().err
