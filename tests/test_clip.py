"""Clip arithmetic: the release's lengths for a duration, tokens, and the resolution table."""

from __future__ import annotations

import pytest

from magihuman.clip import API_RESOLUTIONS, RESOLUTIONS, ClipShape, audio_latents, clip_shape, clip_tokens, resolution


def test_five_seconds_as_the_release_counts_it():
    """SPEC 2: 126 audio latents (randn(1, num_frames, 64)), 32 latent frames, 125 decoded frames."""
    shape = clip_shape(5)
    assert (shape.num_audio, shape.latent_frames, shape.video_frames) == (126, 32, 125)
    assert shape.seconds == 5.0


def test_a2v_length_from_the_audio_latents():
    """Issue 17's example: 4 s of speech -> 100 latents -> 25 latent frames -> 97 video frames."""
    shape = ClipShape(100)
    assert (shape.latent_frames, shape.video_frames) == (25, 97)


@pytest.mark.parametrize(("seconds", "audio", "latent", "video"), [(1, 26, 7, 25), (1.2, 31, 8, 29), (1.52, 39, 10, 37), (2, 51, 13, 49)])
def test_fractional_durations(seconds, audio, latent, video):
    shape = clip_shape(seconds)
    assert (shape.num_audio, shape.latent_frames, shape.video_frames) == (audio, latent, video)


@pytest.mark.parametrize("seconds", [0, -1, 1.01, 1.5, float("nan")])
def test_bad_durations_name_the_rule(seconds):
    with pytest.raises(ValueError, match="whole number of frames at 25 fps"):
        audio_latents(seconds)


def test_tokens_follow_the_shape():
    tokens = clip_tokens(5, 448, 256, text_tokens=300)
    assert tokens.grid == (32, 8, 14) and tokens.num_audio == 126 and tokens.length == 3584 + 126 + 300


def test_resolution_table():
    assert API_RESOLUTIONS == ("256p", "540p", "720p", "1080p")
    assert set(API_RESOLUTIONS) < set(RESOLUTIONS)
    assert resolution("256p").dit_size == (256, 448) and resolution("256p").sr_model is None
    assert resolution("1080p").sr_model == "1080p_sr" and resolution("1080p").dit_size == (1088, 1920)
    assert resolution("540p_sr").output_size == resolution("540p_sr").dit_size == (512, 896)
    for name, size in (("540p", (540, 960)), ("720p", (720, 1280))):  # the API: the 1080p SR path, downsampled
        assert resolution(name).sr_model == "1080p_sr" and resolution(name).dit_size == (1088, 1920)
        assert resolution(name).output_size == size
    assert resolution("540p_sr").sr_model == "540p_sr"  # the paper's 540p row, its own named path
    with pytest.raises(ValueError, match="unknown resolution '480p'"):
        resolution("480p")
