"""End to end on the tiny preset: T2V, TI2V, A2V to mp4 with real component classes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from magihuman.configs import build_group
from magihuman.pipeline import GenerationRequest, MagiHumanPipeline
from magihuman.sampling import SamplerConfig

DURATION = 1
LATENT_FRAMES = (DURATION * 25) // 4 + 1
VIDEO_FRAMES = (LATENT_FRAMES - 1) * 4 + 1  # what a stride-4 VAE can decode for DURATION s
FAST = build_group("sampler", "dmd", num_steps=2, progress=False)  # DMD on the distilled DiT


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def pipeline(cache):
    return MagiHumanPipeline.from_preset("tiny", cache_dir=cache)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "face.png"
    y, x = np.mgrid[0:300, 0:500]
    Image.fromarray(np.stack([(x % 256), (y % 256), ((x + y) % 256)], -1).astype(np.uint8)).save(path)
    return path


def write_speech(path: Path, seconds: float, syllables_hz: float) -> Path:
    """Speech-like audio at 16 kHz: a 180 Hz tone gated on and off ``syllables_hz`` times a second."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * syllables_hz * t) > 0), 16000)
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return write_speech(tmp_path_factory.mktemp("media") / "speech.wav", 1.3, 4)


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        samples = sum(f.samples for f in container.decode(audio=0))
        return dict(frames=frames, size=(video.height, video.width), rate=audio.rate, samples=samples)


def check_mp4(path: Path, size=(256, 448), audio_latents=DURATION * 25 + 1):
    info = probe(path)
    assert info["frames"] == VIDEO_FRAMES
    assert info["size"] == size
    assert info["rate"] == 44100
    # All the decoded audio is muxed, as the release does (1764 samples at 44.1 kHz per latent,
    # 1.04 s under a 1.00 s video); AAC pads to whole 1024-sample frames.
    assert 0 <= info["samples"] - audio_latents * 1764 < 2048


@pytest.fixture(scope="module")
def t2v(pipeline, tmp_path_factory):
    request = GenerationRequest(prompt="hello", duration=DURATION, sampler=FAST, seed=1)
    return pipeline.generate(request, tmp_path_factory.mktemp("out") / "t2v.mp4")


def test_t2v_writes_mp4_with_sound(t2v):
    result = t2v
    check_mp4(result.path)
    assert result.video_latent.shape == (48, LATENT_FRAMES, 16, 28)
    assert result.audio_latent.shape == (DURATION * 25 + 1, 64)
    assert {"text_encode", "base_denoise", "video_decode", "audio_decode", "mux"} <= result.timings.keys()
    assert len(result.step_times["base_denoise"]) == FAST.num_steps


def test_ti2v_first_latent_frame_is_the_image(pipeline, image, tmp_path):
    request = GenerationRequest(prompt="hello", image=image, duration=DURATION, sampler=FAST, seed=2)
    result = pipeline.generate(request, tmp_path / "ti2v.mp4")
    check_mp4(result.path)
    image_latent = pipeline._encode_image(image, 256, 448)
    assert torch.equal(result.video_latent[:, :1], image_latent.float())


def test_a2v_keeps_the_given_audio_latents(pipeline, image, speech, tmp_path):
    request = GenerationRequest(prompt="hi", image=image, audio=speech, duration=DURATION, sampler=FAST, seed=3)
    result = pipeline.generate(request, tmp_path / "a2v.mp4")
    check_mp4(result.path, audio_latents=25)  # 1.3 s of speech cut to 1 s: 25 latents, 7 latent frames, 25 frames
    from magihuman.media import load_audio

    waveform = load_audio(speech, pipeline.audio_vae.sample_rate)[: DURATION * pipeline.audio_vae.sample_rate]
    posterior = pipeline.audio_vae.encode(waveform, generator=torch.Generator().manual_seed(3))
    assert torch.equal(result.audio_latent, posterior)  # drawn first from the run's generator, then pinned
    assert result.audio_latent.shape == (DURATION * 25, 64)


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> Path:
    """1.2 s of speech-like audio at 16 kHz."""
    return write_speech(tmp_path_factory.mktemp("media") / "short.wav", 1.2, 5)


def test_a2v_length_follows_short_speech_as_the_release(pipeline, image, short_speech, tmp_path):
    """1.2 s of speech, duration=2: 1.2 * 51200 samples -> 30 audio latents (2048 each), (30 - 1) // 4 + 1 = 8
    latent frames, 29 video frames. No zero latents, no silence appended; the response says it is shorter."""
    from magihuman.api import FilePolicy, serve

    response = serve(
        {"prompt": "hi", "image_url": image.resolve().as_uri(), "audio_url": short_speech.resolve().as_uri(),
         "duration": 2, "num_inference_steps": 2, "seed": 6},
        pipeline, tmp_path, FilePolicy.roots(image.parent, short_speech.parent),
    )  # fmt: skip
    info = probe(tmp_path / response["video"]["file_name"])
    assert info["frames"] == 29
    assert response["duration"] == 29 / 25 and "shorter than the requested 2 s" in response["duration_note"]
    request = GenerationRequest(prompt="hi", image=image, audio=short_speech, duration=2, sampler=FAST, seed=6)
    result = pipeline.generate(request)
    assert result.audio_latent.shape == (30, 64) and result.video_latent.shape == (48, 8, 16, 28)
    assert result.audio_latent.abs().sum(dim=1).min() > 0  # every latent is speech, none a zero row


def test_distilled_a2v_audio_pinned_or_renoised(pipeline, image, speech):
    """Pinned (our default) keeps the posterior sample; renoised (the release's distilled path)
    regenerates it with DMD like the video; a CFG (base) sampler keeps it either way."""
    def run(mode, sampler=FAST):
        request = GenerationRequest(prompt="hi", image=image, audio=speech, duration=DURATION, sampler=sampler,
                                    seed=3, distilled_a2v_audio=mode)  # fmt: skip
        return pipeline.generate(request).audio_latent

    pinned, renoised = run("pinned"), run("renoised")
    assert not torch.equal(pinned, renoised) and renoised.shape == pinned.shape
    cfg = SamplerConfig(name="unipc_cfg", num_steps=1, progress=False)
    assert torch.equal(run("renoised", cfg), pinned)
    with pytest.raises(ValueError, match="distilled_a2v_audio"):
        GenerationRequest(prompt="hi", distilled_a2v_audio="free")


def test_fixed_seed_is_reproducible_and_seeds_differ(pipeline, t2v):
    def run(seed):
        return pipeline.generate(GenerationRequest(prompt="hello", duration=DURATION, sampler=FAST, seed=seed))

    again, other = run(1), run(2)
    assert torch.equal(again.video_latent, t2v.video_latent) and torch.equal(again.audio_latent, t2v.audio_latent)
    assert not torch.equal(other.video_latent, t2v.video_latent)


def test_cfg_sampler_and_540p_sr_stage(pipeline, tmp_path):
    """The 540p SR model's named path (the paper's 540p row), written at 896x512. The API's 540p
    runs the 1080p SR path instead (tests/test_clip.py); at tiny size on a CPU that is too slow here."""
    sampler = SamplerConfig(name="unipc_cfg", num_steps=2, progress=False)
    request = GenerationRequest(prompt="hello", duration=DURATION, resolution="540p_sr", sampler=sampler, seed=4)
    result = pipeline.generate(request, tmp_path / "540p.mp4")
    check_mp4(result.path, size=(512, 896))
    assert result.video_latent.shape == (48, LATENT_FRAMES, 32, 56)
    assert len(result.step_times["sr_denoise"]) == 5


def test_full_loader_reads_a_release_layout(pipeline, tmp_path):
    """`from_pretrained` on a directory in the release layout goes through the same loaders."""
    from magihuman.components.tiny import ensure_tiny_release

    layout = ensure_tiny_release(tmp_path / "cache")
    full = MagiHumanPipeline.from_pretrained(layout, dit_arch="tiny")
    assert full.dit("base").config == pipeline.dit("base").config
    (layout.root / "1080p_sr").rename(layout.root / "elsewhere")
    import shutil

    shutil.rmtree(layout.text_encoder)
    with pytest.raises(FileNotFoundError, match="1080p_sr.*t5gemma-9b-9b-ul2"):
        MagiHumanPipeline.from_pretrained(layout, dit_arch="tiny")


def test_api_request_to_mp4(pipeline, image, tmp_path):
    from magihuman.api import FilePolicy, serve

    payload = {"prompt": "hello", "image_url": image.resolve().as_uri(), "duration": 1, "num_inference_steps": 2,
               "seed": 5}  # fmt: skip
    response = serve(payload, pipeline, tmp_path, FilePolicy.roots(image.parent))
    assert response["seed"] == 5 and response["video"]["content_type"] == "video/mp4"
    first = tmp_path / response["video"]["file_name"]
    assert response["video"]["file_size"] == first.stat().st_size
    assert "not screened" in response["safety_note"]
    check_mp4(first)
    # The same request (same seed) again gets its own file; the first is untouched.
    before = first.read_bytes()
    again = serve(dict(payload, prompt="someone else"), pipeline, tmp_path, FilePolicy.roots(image.parent))
    assert again["video"]["file_name"] != first.name and first.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, again["video"]["file_name"]])


def test_bad_api_request_leaves_no_file(pipeline, image, tmp_path):
    from magihuman.api import FilePolicy, RequestError, serve

    with pytest.raises(RequestError, match="image_url"):
        serve({"prompt": "hello", "image_url": "https://example.com/a.png"}, pipeline, tmp_path)
    assert list(tmp_path.iterdir()) == []
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the output directory should be
    with pytest.raises(RequestError, match="output_dir: cannot write in"):
        serve({"prompt": "hello", "image_url": str(image)}, pipeline, blocked / "out", FilePolicy.roots(image.parent))


@pytest.mark.parametrize("mode", ["model", "layer"])
def test_offload_gives_identical_output(cache, t2v, mode):
    """Where the weights wait changes nothing: same latents and frames as without offload."""
    from magihuman.model.offload import OffloadConfig

    offloaded = MagiHumanPipeline.from_preset("tiny", cache_dir=cache, offload=OffloadConfig(mode=mode))
    result = offloaded.generate(GenerationRequest(prompt="hello", duration=DURATION, sampler=FAST, seed=1))
    assert torch.equal(result.video_latent, t2v.video_latent)
    assert torch.equal(result.audio_latent, t2v.audio_latent)
    assert np.array_equal(result.frames, t2v.frames)


def test_decoder_is_config_turbo_by_default(cache, pipeline, t2v):
    """Same latents either way; the turbo decoder (default, as the release) or the Wan2.2 VAE makes the pixels."""
    from magihuman.components import TurboVideoDecoder
    from magihuman.media import pixels_to_frames

    assert isinstance(pipeline.video_decoder, TurboVideoDecoder)
    assert np.array_equal(t2v.frames, pixels_to_frames(pipeline.video_decoder.decode(t2v.video_latent)))
    wan = MagiHumanPipeline.from_preset("tiny", cache_dir=cache, decoder="wan")
    assert wan.video_decoder is wan.video_vae
    result = wan.generate(GenerationRequest(prompt="hello", duration=DURATION, sampler=FAST, seed=1))
    assert torch.equal(result.video_latent, t2v.video_latent)
    assert np.array_equal(result.frames, pixels_to_frames(wan.video_vae.decode(result.video_latent)))
    assert not np.array_equal(result.frames, t2v.frames)


def test_nan_weights_stop_the_run_naming_stage_step_and_settings(cache, image, tmp_path):
    """A NaN in the DiT is named at the end of the denoise stage, and a served request leaves no file."""
    from magihuman.api import FilePolicy, serve
    from magihuman.pipeline import NonFiniteLatentsError

    broken = MagiHumanPipeline.from_preset("tiny", cache_dir=cache)
    with torch.no_grad():
        broken.dit("distill").final_norm_video.weight.fill_(float("nan"))
    request = GenerationRequest(prompt="hello", duration=DURATION, sampler=FAST, seed=1)
    with pytest.raises(NonFiniteLatentsError, match=r"base_denoise \(distill DiT\): non-finite latents after step 1 "
                                                    r"of 2 \(sampler=dmd, num_steps=2, resolution=256p, duration=1, "
                                                    r"seed=1\)"):  # fmt: skip
        broken.generate(request, output=tmp_path / "clip.mp4")
    payload = {"prompt": "hello", "image_url": str(image), "duration": 1, "num_inference_steps": 2, "seed": 5}
    with pytest.raises(NonFiniteLatentsError):
        serve(payload, broken, tmp_path, FilePolicy.roots(image.parent))
    assert list(tmp_path.iterdir()) == []
