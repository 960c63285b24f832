"""The memory planner against real CPU runs of the pipeline, and its CLI.

The planner builds every module on meta and runs the stages' code on fake tensors; here the
same pipeline really runs on the CPU (fp32, as the planner's ``device="cpu"`` plans it) and each
stage's peak is measured: weights held (non-meta parameters and buffers of every component,
sampled at stage boundaries and before each streamed layer) plus :class:`LiveTensorBytes`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

import magihuman.pipeline as pipeline_module
from magihuman.components.arch import build_dit, random_components, release_arch
from magihuman.harness.memory import (
    GIB,
    LAYER_KINDS,
    LiveTensorBytes,
    PlanConfig,
    dit_weights,
    distinct_layers,
    main,
    plan,
    tensor_bytes,
)
from magihuman.model import DiTConfig
from magihuman.model.offload import OffloadConfig
from magihuman.model.presets import FULL, FULL_SR_1080P
from magihuman.model.quant import quantize
from magihuman.components.text_encoder import MAX_TEXT_TOKENS
from magihuman.pipeline import NEGATIVE_PROMPT_FILE, GenerationRequest, MagiHumanPipeline
from magihuman.sampling import SamplerConfig, SRConfig
from magihuman.timing import StageTimer

TOLERANCE = 0.10
SAMPLER = SamplerConfig(name="dmd", num_steps=2, cfg_passes=1, progress=False)  # the peak repeats every step
SR = SRConfig(sampler=SamplerConfig(name="unipc_cfg", num_steps=2, cfg_passes=1, progress=False))
PROMPT = "A woman smiles and says hello."
TINY = release_arch("tiny")
# a mid-size arch: the tiny components around a wider DiT with expert, local and gelu7 layers
MID_DIT = DiTConfig(num_layers=3, hidden_size=256, head_dim=64, num_query_groups=2,
                    text_in_channels=TINY.dits["base"].text_in_channels,
                    mm_layers=(0,), gelu7_layers=(0,), local_attn_layers=(1, 2))  # fmt: skip
MID = replace(TINY, name="mid", dits={name: MID_DIT for name in TINY.dits})
OFFLOADS = {"none": OffloadConfig(), "model": OffloadConfig("model"),
            "layer": OffloadConfig("layer", vae_tiling=True, mlp_chunk_tokens=64)}  # fmt: skip


def _resident(pipe: MagiHumanPipeline) -> int:
    """Bytes of weights the pipeline holds on its device (offloaded ones are meta placeholders)."""
    modules = [pipe.text_encoder.model, pipe.video_vae.model, pipe.audio_vae.model, pipe.video_decoder.model,
               *pipe._dits.values()]  # fmt: skip
    seen, total = set(), 0
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            if t.device.type != "meta" and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def measured_run(arch, offload: OffloadConfig, decoder: str, resolution: str, sampler: SamplerConfig, sr: SRConfig):
    """Each stage's peak (weights held + live activations) of a real CPU generation, and the text tokens
    of the prompt and of the negative prompt."""
    components = random_components(arch, "cpu", torch.float32, decoder=decoder)
    dits = {name: build_dit(config, "cpu") for name, config in arch.dits.items()}  # built before the meter runs
    pipe = MagiHumanPipeline(
        components.text_encoder, components.video_vae, components.audio_vae,
        {name: (lambda m=model: m) for name, model in dits.items()},
        video_decoder=components.video_decoder, offload=offload, sr=sr,
    )  # fmt: skip
    meter, peaks, weights = LiveTensorBytes(), {}, [0]

    def sample_weights(*_):
        weights[0] = max(weights[0], _resident(pipe))

    hooked = set()
    for layer in pipe.text_encoder.model.encoder.layers:
        layer.register_forward_pre_hook(sample_weights)
    load = pipe.dit

    def dit(name):  # sample the weights before each streamed layer runs (after the streamer loaded it)
        model = load(name)
        if name not in hooked:
            hooked.add(name)
            for layer in model.block.layers:
                layer.register_forward_pre_hook(sample_weights)
        return model

    pipe.dit = dit

    class MeteredTimer(StageTimer):
        @contextmanager
        def stage(self, name):
            meter.reset_peak()
            weights[0] = 0
            sample_weights()
            with super().stage(name):
                yield
            sample_weights()
            peaks[name] = max(peaks.get(name, 0), meter.peak + weights[0])

    original = pipeline_module.StageTimer
    pipeline_module.StageTimer = MeteredTimer
    try:
        with meter:
            pipe.generate(GenerationRequest(PROMPT, duration=1, resolution=resolution, sampler=sampler, seed=0))
    finally:
        pipeline_module.StageTimer = original
    tokens = (PROMPT, NEGATIVE_PROMPT_FILE.read_text().strip())  # the cond and uncond rows' texts
    return peaks, *(min(pipe.text_encoder.num_tokens(text), MAX_TEXT_TOKENS) for text in tokens)


SLOW = pytest.mark.slow  # seconds each on a loaded 2-core VM: CI runs one case per offload mode and decoder
CASES = [
    pytest.param(TINY, "model", "turbo", "256p", id="tiny-model-turbo"),
    pytest.param(TINY, "layer", "wan", "256p", id="tiny-layer-wan-tiled"),
    pytest.param(MID, "none", "turbo", "256p", id="mid-none-turbo"),
    pytest.param(TINY, "none", "wan", "256p", id="tiny-none-wan", marks=SLOW),
    pytest.param(TINY, "layer", "turbo", "256p", id="tiny-layer-turbo", marks=SLOW),
    pytest.param(TINY, "none", "turbo", "540p_sr", id="tiny-none-turbo-sr", marks=SLOW),
    pytest.param(TINY, "model", "wan", "540p_sr", id="tiny-model-wan-sr", marks=SLOW),
    pytest.param(MID, "model", "wan", "256p", id="mid-model-wan", marks=SLOW),
    pytest.param(MID, "layer", "turbo", "256p", id="mid-layer-turbo", marks=SLOW),
]


@pytest.mark.parametrize("arch, offload, decoder, resolution", CASES)
def test_predicted_peaks_match_a_real_cpu_run(arch, offload, decoder, resolution):
    measured, tokens, _ = measured_run(arch, OFFLOADS[offload], decoder, resolution, SAMPLER, SR)
    predicted = plan(PlanConfig(arch, resolution, 1, OFFLOADS[offload], decoder=decoder, sampler=SAMPLER, sr=SR,
                                text_tokens=tokens, encoder_tokens=tokens, device="cpu"))  # fmt: skip
    for stage in predicted.stages:
        error = stage.total / measured[stage.name] - 1
        print(f"{arch.name} {offload} {decoder} {resolution} {stage.name}: predicted {stage.total} "
              f"measured {measured[stage.name]} ({error:+.1%})")  # fmt: skip
        assert abs(error) <= TOLERANCE, stage.name


def test_cfg_rows_and_chunked_mlp_are_measured():
    """Two CFG rows per forward cost more; chunked MLPs less; a real UniPC + CFG run agrees."""
    sampler = SamplerConfig(name="unipc_cfg", num_steps=2, cfg_passes=2, progress=False)
    measured, tokens, negative = measured_run(MID, OFFLOADS["none"], "turbo", "256p", sampler, SR)
    config = PlanConfig(MID, "256p", 1, sampler=sampler, text_tokens=tokens, negative_tokens=negative,
                        encoder_tokens=negative, device="cpu")  # the text encode peaks on the negative prompt
    cfg = plan(config).stages[1]
    assert abs(cfg.total / measured["base_denoise"] - 1) <= TOLERANCE
    one = plan(replace(config, sampler=replace(sampler, cfg_passes=1))).stages[1]
    chunked = plan(replace(config, offload=OffloadConfig(mlp_chunk_tokens=64))).stages[1]
    assert one.working < cfg.working and chunked.working < cfg.working


def test_weights_are_the_built_modules():
    full = dit_weights(FULL)
    assert 30.5e9 < full.total < 30.7e9  # 15.3B parameters, bf16 linears + fp32 norms/adapter (issue 9: 30.6 GB)
    assert 0.5 < dit_weights(FULL, "int8").total / full.total < 0.51
    model = quantize(build_dit(MID_DIT, "cpu"), "int8")
    assert dit_weights(MID_DIT, "int8").total == tensor_bytes(model)
    sizes = dit_weights(FULL_SR_1080P).layers
    two = dit_weights(FULL_SR_1080P).streamed(2)
    assert two == dit_weights(FULL_SR_1080P).outer + max(a + b for a, b in zip(sizes, sizes[1:] + sizes[:1]))
    assert two < 3.4e9  # two sandwich-expert layers


def test_distinct_layers_keep_one_layer_of_each_kind():
    small = distinct_layers(FULL_SR_1080P)
    assert small.num_layers < 8
    def kinds(c):
        return {tuple(i in getattr(c, name) for name in LAYER_KINDS) for i in range(c.num_layers)}

    assert kinds(small) == kinds(FULL_SR_1080P)


def _plan_line(capsys, *args) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_single_plan_and_table_row_agree(capsys):
    """The issue's bug: the single plan and the table disagreed for the same settings (25.69 vs 11.9 GiB)."""
    args = ["model=tiny", "duration=1", "resolution=540p_sr", "offload=layer", "quant=int8"]
    single = _plan_line(capsys, *args)
    assert "turbo" in single and "video_decode" in single
    peak = single.split("  peak ")[1].split(" GiB")[0]
    table = _plan_line(capsys, "model=tiny", "duration=1", "plan.mode=table", "plan.resolutions=[540p_sr]")
    row = next(line for line in table.splitlines() if line.split()[:3] == ["540p_sr", "layer", "int8"])
    assert row.split()[3] == peak
    assert {line.split()[1] for line in table.splitlines()[1:]} == {"none", "model", "layer"}  # the offload YAMLs


def test_full_release_plan_orders_offload_modes(capsys):
    peaks = {}
    for mode in ("none", "model", "layer"):
        out = _plan_line(capsys, "resolution=256p", f"offload={mode}")
        peaks[mode] = float(out.split("  peak ")[1].split(" GiB")[0])
    assert peaks["layer"] < peaks["model"] < peaks["none"]
    assert peaks["none"] > 45  # the 15B DiT (28.5 GiB) and the 9B text encoder (17 GiB) together


def test_cli_rejects_bad_options(capsys):
    assert main(["offload=sometimes"]) == 2
    assert main(["plan.mode=everything"]) == 2
    assert "magihuman-plan:" in capsys.readouterr().err


def test_cli_prints_the_parallel_table(capsys):
    out = _plan_line(capsys, "plan.mode=parallel", "plan.gpus=8", "resolution=256p", "sampler=unipc_cfg")
    for label in ("fsdp8", "cp8", "cp8+fsdp8", "cp4+cfg"):
        assert f" {label} " in out


@pytest.mark.gpu
def test_gpu_forward_peak_matches_prediction():
    """A real CUDA run of the mid pipeline (bf16) against ``torch.cuda.max_memory_allocated`` per stage."""
    sampler = SamplerConfig(name="dmd", num_steps=2, cfg_passes=1, progress=False)
    components = random_components(MID, "cuda", torch.bfloat16)
    pipe = MagiHumanPipeline(components.text_encoder, components.video_vae, components.audio_vae,
                             {n: (lambda c=c: build_dit(c, "cpu")) for n, c in MID.dits.items()},
                             video_decoder=components.video_decoder, device="cuda")  # fmt: skip
    request = GenerationRequest(PROMPT, duration=1, resolution="256p", sampler=sampler, seed=0)
    pipe.generate(request)  # warm-up: cuBLAS workspaces and kernel caches are not activations
    torch.cuda.reset_peak_memory_stats()
    pipe.generate(request)
    measured = torch.cuda.max_memory_allocated()
    tokens = pipe.text_encoder.num_tokens(PROMPT)
    predicted = plan(PlanConfig(MID, "256p", 1, sampler=sampler, text_tokens=tokens, encoder_tokens=tokens)).peak.total
    print(f"cuda measured {measured / GIB:.3f} GiB predicted {predicted / GIB:.3f} GiB")
    assert abs(predicted / measured - 1) <= 0.15


def test_meter_skips_meta_placeholders():
    with LiveTensorBytes() as meter:
        torch.empty(1000, device="meta")
        kept = torch.empty(1000)
    assert meter.peak == kept.untyped_storage().nbytes()
