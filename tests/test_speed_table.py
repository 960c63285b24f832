"""The speed table (magihuman.harness.speed, launched by scripts/speed_table.py) on CPU with the tiny
release: it runs exactly what ``magihuman-generate +experiment=NAME`` runs (every DiT forward, the
samplers, the decoder), its JSON, a cut-off run, its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

import magihuman.pipeline as pipeline_module
from magihuman.components import TurboVideoDecoder, WanVideoVAE
from magihuman.harness import speed
from magihuman.harness.bench import load_speed_json
from magihuman.harness.prompts import build_request
from magihuman.model import DiT
from magihuman.pipeline import MagiHumanPipeline

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "speed_table.py"
TINY = ["model.arch=tiny", "device=cpu", "duration=0.04"]  # one video frame: the decoders dominate on a CPU
GENERATE_STAGES = ["text_encode", "image_encode", "audio_encode", "base_denoise", "sr_denoise", "video_decode",
                   "audio_decode"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")  # nothing here is timed (see tests/conftest.py)


@pytest.fixture
def hydra_configs():
    with initialize_config_module("magihuman.configs", version_base="1.3"):
        yield


@pytest.fixture
def recorder(monkeypatch):
    """Every DiT forward (which DiT config, packed tokens and rows, a digest of its input tokens and
    coordinates: the coords style and the latents), the sampler configs of each denoise stage and the
    decoder calls (which decoder, its latents), in order. The decoders are recorded, not run: the
    tiny turbo decoder takes half a minute per 540p frame on this CPU; one black frame stands in."""
    log = []
    forward = DiT.forward

    def recording_forward(self, packed, layout=None):
        log.append(("dit", self.config, packed.x.shape[0], len(packed.samples),
                    float(packed.x.double().sum()), float(packed.coords.double().sum())))  # fmt: skip
        return forward(self, packed, layout)

    monkeypatch.setattr(DiT, "forward", recording_forward)
    sample, sample_sr = pipeline_module.sample, pipeline_module.sample_sr

    def recording_sample(config, *args, **kwargs):
        log.append(("sample", asdict(config)))
        return sample(config, *args, **kwargs)

    def recording_sample_sr(config, *args, **kwargs):
        log.append(("sample_sr", asdict(config)))
        return sample_sr(config, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "sample", recording_sample)
    monkeypatch.setattr(pipeline_module, "sample_sr", recording_sample_sr)
    for cls in (TurboVideoDecoder, WanVideoVAE):
        monkeypatch.setattr(cls, "decode", lambda self, z, _name=cls.__name__:
                            log.append(("decode", _name, tuple(z.shape), float(z.double().sum())))
                            or torch.zeros(3, 1, 16, 16))  # fmt: skip
    return log


@pytest.mark.parametrize("experiment, sr_forwards", [("paper_256p", 0), ("paper_540p", 5)])
def test_the_table_runs_what_generate_runs(hydra_configs, recorder, tmp_path, experiment, sr_forwards):
    """The speed table's run of an experiment and ``magihuman-generate +experiment=NAME`` on the same
    model make the same DiT forwards (count, tokens, rows, inputs, coordinates), with the same samplers
    and SR sampler, and decode with the same decoder; the table's JSON reports those forwards."""
    overrides = [*TINY, "warmup=0", "repeats=1", f"experiments=[{experiment}]", f"out={tmp_path / 't.json'}"]
    report = speed.run(compose("speed", overrides), overrides)
    timed = list(recorder)
    recorder.clear()

    cfg = compose("generate", [f"+experiment={experiment}", "model=random", *TINY, "sampler.progress=false",
                                  "sr.sampler.progress=false"])
    instantiate(cfg.model).generate(build_request(cfg))  # what magihuman-generate runs (less the mp4)
    assert timed == recorder

    forwards = [c for c in timed if c[0] == "dit"]
    assert len(forwards) == 8 + sr_forwards  # the experiment's 8 DMD steps (+ the SR sampler's 5)
    assert [c[0] for c in timed if c[0] != "dit"] == ["sample"] + ["sample_sr"] * bool(sr_forwards) + ["decode"]
    assert next(c for c in timed if c[0] == "sample")[1]["name"] == "dmd"
    assert next(c for c in timed if c[0] == "decode")[1] == "TurboVideoDecoder"
    (ran,) = report["experiments"]
    stages = ran["stages"]
    assert [s for s in GENERATE_STAGES if s in stages] == list(stages)
    assert stages["base_denoise"]["forwards"] == 8 and stages["base_denoise"]["tokens_per_forward"] == forwards[0][2]
    if sr_forwards:
        sr = stages["sr_denoise"]
        assert (sr["forwards"], sr["tokens_per_forward"]) == (sr_forwards, forwards[-1][2])
        assert ran["request"]["sr_sampler"] == next(c for c in timed if c[0] == "sample_sr")[1]["sampler"]
    else:
        assert "sr_denoise" not in stages and ran["request"]["sr_sampler"] is None


def test_the_cli_writes_every_stage_of_generate(tmp_path):
    """The whole command, as scripts/speed_table.py launches it, on CPU: the JSON has every stage
    generate times, per-step times, FLOPs, peaks, the machine and the paper's row; nothing else is written."""
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, str(SCRIPT), *TINY, "warmup=0", "repeats=1", "experiments=[paper_540p]",
                           "decoder=wan", f"out={out}", "peak_tflops=1"],  # tiny turbo: 6x slower on a CPU
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no Hydra folders, no temporary file
    report = json.loads(out.read_text())
    assert report["complete"] and report["runtime"]["label"] == "none/sdpa" and report["model"]["arch"] == "tiny"
    assert report["magihuman"]["fingerprint"]["id"] and report["magihuman"]["calibration"]["dtype"] == "float32"
    (ran,) = report["experiments"]
    assert ran["name"] == "paper_540p" and list(ran["stages"]) == GENERATE_STAGES
    assert ran["request"]["resolution"] == "540p_sr" and ran["request"]["sampler"]["num_steps"] == 8
    assert ran["request"]["decoder"] == report["model"]["decoder"] == "wan"
    assert ran["paper_h100_seconds"] == {"base": 1.6, "sr": 5.1, "decode": 1.3, "total": 8.0}
    assert ran["seconds"] == pytest.approx(sum(s["seconds"] for s in ran["stages"].values()))
    assert ran["peak_memory_bytes"] > 0
    for name in ("base_denoise", "sr_denoise"):
        s = ran["stages"][name]
        assert s["steps"] == s["forwards"] == (8 if name == "base_denoise" else 5)
        assert 0 < s["step_seconds"] <= s["seconds"] and s["flops"] > 0
        assert s["mfu"] == pytest.approx(s["tflops"] / 1.0)  # against the given peak
    assert ran["stages"]["video_decode"]["flops"] is None and ran["stages"]["video_decode"]["seconds"] > 0
    assert "paper_540p" in done.stdout and "/ 5.1" in done.stdout  # the printed table, beside the paper
    medians, machine = load_speed_json(out)  # what magihuman-bench compare --suite speed reads
    assert medians["paper_540p sr_denoise"] == ran["stages"]["sr_denoise"]["seconds"] and machine == report["magihuman"]


def test_a_cut_off_run_keeps_the_experiments_it_finished(hydra_configs, tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    overrides = [*TINY, "warmup=0", "repeats=1", "experiments=[paper_256p,paper_base_cfg]", "decoder=wan", f"out={out}"]
    real = speed.time_request
    calls = []

    def cut_off(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the device machine's time ran out during the second experiment
        return real(*args)

    monkeypatch.setattr(speed, "time_request", cut_off)
    with pytest.raises(KeyboardInterrupt):
        speed.run(compose("speed", overrides), overrides)
    report = json.loads(out.read_text())
    assert report["complete"] is False and [e["name"] for e in report["experiments"]] == ["paper_256p"]
    assert calls[0][0] is calls[1][0]  # one pipeline for both experiments (the same model config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiments=[paper_256p,paper_720p]"], "unknown experiment 'paper_720p'; expected names from configs/"),
        (["experiments=[paper_256p]", "duration=0.03"], "experiment paper_256p: "),
        (["experiments=[]"], "experiments is empty"),
        (["runtime=compiled", "warmup=0"], "need warmup >= 1"),
        (["runtime=fast"], "runtime.cuda_graphs=true needs a CUDA device"),
        (["quant=fp8"], "quant=fp8 needs a CUDA GPU"),
        (["+experiment=paper_256p"], "experiments=[NAME,...]"),
        (["repeats=0"], "repeats must be >= 1"),
    ],
)
def test_unusable_configs_are_refused_before_a_model_runs(hydra_configs, monkeypatch, tmp_path, overrides, message):
    monkeypatch.setattr(speed, "time_request", lambda *a: pytest.fail("ran a generation"))
    overrides = [*TINY, *overrides, f"out={tmp_path / 't.json'}"]
    with pytest.raises(speed.SpeedTableError, match=None) as error:
        speed.run(compose("speed", overrides), overrides)
    assert message in str(error.value)


def test_bad_input_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["speed_table.py", "experiments=[nope]"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            speed.main()
    finally:
        GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "unknown experiment 'nope'" in err


@pytest.mark.parametrize(
    "experiment, resolution, sampler, steps",
    [("paper_256p", "256p", "dmd", 8), ("paper_540p", "540p_sr", "dmd", 8), ("paper_1080p", "1080p", "dmd", 8),
     ("paper_base_cfg", "256p", "unipc_cfg", 32)],
)
def test_experiments_pin_the_paper_rows_on_any_generate_config(hydra_configs, experiment, resolution, sampler, steps):
    """Over generate's and the sweep's defaults (2 and 1 s clips, a ti2v sweep); the command line still wins."""
    for base in ("generate", "sweep"):
        cfg = compose(base, [f"+experiment={experiment}"])
        request = build_request(cfg)
        assert (request.resolution, request.sampler.name, request.sampler.num_steps) == (resolution, sampler, steps)
        assert (request.duration, cfg.decoder) == (5.0, "turbo")
        override = compose(base, [f"+experiment={experiment}", "duration=0.2", "sampler=sde"])
        assert (override.duration, override.sampler.name) == (0.2, "sde")


def test_default_grid_experiment_is_the_sweeps_default_grid(hydra_configs):
    grid = compose("sweep", ["+experiment=default_grid"], return_hydra_config=True).hydra.sweeper.params
    assert grid == compose("sweep", return_hydra_config=True).hydra.sweeper.params and "sampler" in grid


def test_random_pipeline_is_the_full_release_by_default():
    """``model=random`` (the table's model) is the 15B release: built on meta, nothing is allocated."""
    pipeline = MagiHumanPipeline.random(device="meta")
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in
              (("text", pipeline.text_encoder.model), ("turbo", pipeline.video_decoder.model),
               ("wan", pipeline.video_vae.model), ("audio", pipeline.audio_vae.model))}  # fmt: skip
    assert params == {"text": 9_241_705_984, "turbo": 107_122_892, "wan": 704_688_668, "audio": 156_112_514}
    sr = pipeline.dit("1080p_sr")  # built on first use, like a loaded DiT
    assert sr.config.local_attn_layers and sum(p.numel() for p in sr.parameters()) > 15e9
    assert next(sr.parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="decoder must be one of"):
        MagiHumanPipeline.random("tiny", "cpu", decoder="vae")


def test_script_is_a_thin_launcher():
    assert len(SCRIPT.read_text().splitlines()) <= 10 and "magihuman.harness.speed" in SCRIPT.read_text()
