"""The speed table (magihuman.harness.speed, launched by scripts/speed_table.py) on CPU with the tiny
preset: the JSON it writes (after every stage), that it runs the pipeline's own code, its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from magihuman.harness import speed
from magihuman.harness.bench import load_speed_json
from magihuman.sampling.velocity import dit_velocity

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "speed_table.py"


pytestmark = pytest.mark.usefixtures("one_thread")  # nothing here is timed (see tests/conftest.py)


@pytest.fixture(scope="module")
def speed_table():
    return speed


TINY_ARGS = ["--arch", "tiny", "--device", "cpu", "--duration", "0.2", "--text-tokens", "16"]
TINY_ARGS += ["--warmup", "0", "--repeats", "1"]


def test_tiny_256p_clip_writes_json(speed_table, tmp_path):
    out = tmp_path / "table.json"
    report = speed_table.main([*TINY_ARGS, "--resolutions", "256p", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary file left behind

    stages = {s["kind"]: s for s in report["stages"]}
    assert list(stages) == ["base_distill", "base_cfg", "decode", "audio_decode", "decode_wan"]
    distill, cfg = stages["base_distill"], stages["base_cfg"]
    assert distill["tokens_per_forward"] == 2 * 8 * 14 + 6 + 16  # 0.2 s -> 6 audio latents, 2 latent frames
    assert cfg["tokens_per_forward"] == 2 * distill["tokens_per_forward"]
    assert (distill["steps"], cfg["steps"], cfg["passes"]) == (8, 32, 2)
    assert cfg["flops"] == pytest.approx(distill["flops"] / 8 * 2 * 32)
    for s in report["stages"]:
        assert s["seconds"] > 0 and s["peak_memory_bytes"] > 0 and len(s["seconds_all"]) == 1
    assert stages["decode"]["flops"] is None and distill["mfu"] is None  # CPU: no peak without an override
    for kind in ("decode_wan", "audio_decode"):
        assert stages[kind]["flops"] is None and stages[kind]["paper_seconds"] is None
    total = report["totals_seconds"]["256p"]
    assert total["total"] == pytest.approx(distill["seconds"] + stages["decode"]["seconds"])
    assert report["paper_h100_seconds"]["1080p"]["sr"] == 31.0
    assert report["magihuman"]["fingerprint"]["id"] and report["magihuman"]["calibration"]["dtype"] == "float32"
    medians, machine = load_speed_json(out)  # what magihuman-bench compare --suite speed reads per run
    assert medians == {f"{s['kind']} 256p": s["seconds"] for s in report["stages"]} and machine == report["magihuman"]


def test_tiny_sr_stage_with_peak_override(speed_table, tmp_path):
    report = speed_table.main(
        [*TINY_ARGS, "--resolutions", "540p", "--stages", "sr", "--peak-tflops", "1", "--out", str(tmp_path / "t.json")]
    )
    (sr,) = report["stages"]
    assert (sr["kind"], sr["resolution"], sr["steps"]) == ("sr", "540p", 5)
    assert sr["mfu"] == pytest.approx(sr["tflops"] / 1.0)
    assert report["totals_seconds"]["540p"]["total"] is None  # base and decode not run


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--compile", "model", "--cuda-graphs"], "runtime.cuda_graphs=true needs a CUDA device"),
        (["--cuda-graphs"], "runtime.cuda_graphs=true needs runtime.compile"),
        (["--quant", "fp8"], "quant=fp8 needs a CUDA GPU"),
        (["--compile", "model", "--warmup", "0"], "need --warmup >= 1"),
    ],
)
def test_unsupported_options_fail_clearly_on_cpu(speed_table, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        speed_table.main(["--arch", "tiny", "--device", "cpu", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_times_the_pipelines_own_code(speed_table):
    """One velocity, one runtime, one quantizer, one timer: the pipeline's (no copies in the harness)."""
    assert speed_table.dit_velocity is dit_velocity
    import magihuman.pipeline as pipeline
    from magihuman.model import quant, runtime

    assert pipeline.dit_velocity is dit_velocity
    assert speed_table.quantize is quant.quantize and speed_table.apply_runtime is runtime.apply_runtime


def test_partial_results_after_each_stage(speed_table, tmp_path, monkeypatch):
    """A run cut off after its first stage still leaves that stage in the JSON (complete: false)."""
    out = tmp_path / "t.json"
    real = speed_table.decode_runner

    def cut_off(*args):
        raise KeyboardInterrupt  # the device machine's time ran out at the decode stage

    monkeypatch.setattr(speed_table, "decode_runner", cut_off)
    with pytest.raises(KeyboardInterrupt):
        speed_table.main([*TINY_ARGS, "--resolutions", "256p", "--stages", "base_distill", "decode", "--out", str(out)])
    monkeypatch.setattr(speed_table, "decode_runner", real)
    report = json.loads(out.read_text())
    assert report["complete"] is False and [s["kind"] for s in report["stages"]] == ["base_distill"]


def test_timing_path_imports_no_media_or_eval_packages():
    """The device machine has no PyAV / librosa / matplotlib: the speed table must not need them."""
    code = ("import sys, magihuman.harness.speed; "
            "print(sorted(m for m in ('av', 'librosa', 'soundfile', 'matplotlib', 'eval', 'hydra') if m in sys.modules))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_script_is_a_thin_launcher():
    assert len(SCRIPT.read_text().splitlines()) <= 10 and "magihuman.harness.speed" in SCRIPT.read_text()


def test_decode_is_the_turbo_decoder_and_decode_wan_the_wan_vae(speed_table, tmp_path, monkeypatch):
    """The paper's decode column is the release's turbo decoder; the Wan2.2 VAE is timed beside it."""
    built = []
    for name in ("build_turbo", "build_vae"):
        real = getattr(speed_table, name)
        monkeypatch.setattr(speed_table, name, lambda *a, _real=real, _name=name: built.append(_name) or _real(*a))
    speed_table.main([*TINY_ARGS, "--resolutions", "256p", "--stages", "decode", "decode_wan",
                      "--out", str(tmp_path / "t.json")])  # fmt: skip
    assert built == ["build_turbo", "build_vae"]
