"""scripts/speed_table.py on CPU with the tiny preset: the JSON it writes, its forward mirror, its refusals."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from magihuman.harness.bench import load_speed_json
from magihuman.model import concat, pack
from magihuman.model.presets import TINY, TINY_SR_1080P

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "speed_table.py"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Timings are not checked here; one thread avoids OpenMP oversubscription stalls (100x) on a shared box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def speed_table():
    spec = importlib.util.spec_from_file_location("speed_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


TINY_ARGS = ["--arch", "tiny", "--device", "cpu", "--duration", "0.2", "--text-tokens", "16"]
TINY_ARGS += ["--warmup", "0", "--repeats", "1"]


def test_tiny_256p_clip_writes_json(speed_table, tmp_path):
    out = tmp_path / "table.json"
    report = speed_table.main([*TINY_ARGS, "--resolutions", "256p", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary file left behind

    stages = {s["kind"]: s for s in report["stages"]}
    assert list(stages) == ["base_distill", "base_cfg", "decode"]
    distill, cfg = stages["base_distill"], stages["base_cfg"]
    assert distill["tokens_per_forward"] == 2 * 8 * 14 + 6 + 16  # 0.2 s -> 6 audio latents, 2 latent frames
    assert cfg["tokens_per_forward"] == 2 * distill["tokens_per_forward"]
    assert (distill["steps"], cfg["steps"], cfg["passes"]) == (8, 32, 2)
    assert cfg["flops"] == pytest.approx(distill["flops"] / 8 * 2 * 32)
    for s in report["stages"]:
        assert s["seconds"] > 0 and s["peak_memory_bytes"] > 0 and len(s["seconds_all"]) == 1
    assert stages["decode"]["flops"] is None and distill["mfu"] is None  # CPU: no peak without an override
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
        (["--cuda-graphs"], "--cuda-graphs needs a CUDA device"),
        (["--fp8"], "--fp8 needs a CUDA GPU"),
        (["--compile", "--warmup", "0"], "need --warmup >= 1"),
    ],
)
def test_unsupported_options_fail_clearly_on_cpu(speed_table, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        speed_table.main(["--arch", "tiny", "--device", "cpu", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("config", [TINY, TINY_SR_1080P], ids=["tiny", "tiny_sr_1080p"])
def test_hoisted_forward_matches_the_model(speed_table, config):
    """The script's copy of DiT.forward (used for CUDA graphs) must track the model's."""
    model = speed_table.build_dit(config, torch.device("cpu"), seed=0)
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(48, 3, 4, 6, generator=g), torch.randn(9, 64, generator=g)
    packed = concat([pack(video, audio, torch.randn(n, 32, generator=g), frame_receptive_field=1) for n in (5, 11)])
    with torch.inference_mode():
        hoisted = speed_table.HoistedForward(model, packed, cuda_graph=False)
        assert torch.equal(hoisted(packed), model(packed))


def test_expert_linears_split_for_fp8_keep_outputs(speed_table):
    model = speed_table.build_dit(TINY, torch.device("cpu"), seed=0)
    packed = pack(torch.randn(48, 2, 4, 6), torch.randn(5, 64), torch.randn(7, 32))
    with torch.inference_mode():
        before = model(packed)
        speed_table.split_expert_linears(model)
        after = model(packed)
    assert isinstance(model.block.layers[0].attention.linear_qkv, speed_table.Fp8ExpertLinear)
    assert len(model.block.layers[0].mlp.up_gate_proj.experts) == 3
    assert torch.equal(before, after)
