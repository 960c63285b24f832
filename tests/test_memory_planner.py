"""The memory planner against measured peaks, its weight counts against built models, and its CLI.

Measurements use :class:`LiveTensorBytes` (peak bytes of live tensor storages created during
the call: what CUDA's ``max_memory_allocated`` counts, without allocator rounding), so the
CPU runs check the op-by-op activation model of the DiT and the VAE decode model.
Tolerances: DiT activations within 5% (they match to the byte today), the fitted VAE model
within 20% (it is conservative for 2-latent-frame clips, exact to a few % for longer ones).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from magihuman.components.tiny import TINY_VIDEO_VAE_CONFIG, tiny_video_vae
from magihuman.components.video_vae import WanVideoVAE
from magihuman.clip import SampleTokens
from magihuman.harness.memory import (
    CPU_PRECISION,
    GIB,
    GPU_PRECISION,
    LayerDims,
    LiveTensorBytes,
    PlanConfig,
    VideoVAEShape,
    attention_phase_bytes,
    dit_forward_bytes,
    dit_weight_bytes,
    largest_tensor_bytes,
    layer_weight_bytes,
    main,
    outer_weight_bytes,
    plan,
    sample_spans,
    span_workspace,
    streamed_weight_bytes,
    video_decode_bytes,
)
from magihuman.model import DiT, DiTConfig, ForwardOptions, concat, pack
from magihuman.model.dit import init_weights
from magihuman.model.offload import enable_tiled_decode
from magihuman.model.presets import FULL, FULL_SR_1080P, TINY, TINY_SR_1080P
from magihuman.model.quant import quantize

DIT_TOLERANCE = 0.05
VAE_TOLERANCE = 0.20
WIDE = DiTConfig(num_layers=3, hidden_size=256, head_dim=64, num_query_groups=2, text_in_channels=64,
                 mm_layers=(0,), gelu7_layers=(0,), local_attn_layers=(1, 2))  # fmt: skip


def _batch(rows: int, grid=(4, 16, 16), receptive_field: int = 1):
    """A packed batch of ``rows`` samples and its token counts (the text length varies per row)."""
    t, h, w = grid
    generator = torch.Generator().manual_seed(0)
    packs, samples = [], []
    for r in range(rows):
        text = 20 + 5 * r
        video = torch.randn(48, t, h, w, generator=generator)
        audio = torch.randn((t - 1) * 4 + 1, 64, generator=generator)
        packs.append(pack(video, audio, torch.randn(text, 64, generator=generator), "v1", receptive_field))
        samples.append(SampleTokens((t, h // 2, w // 2), (t - 1) * 4 + 1, text))
    return concat(packs), samples


def _model(config: DiTConfig, quant: str = "none") -> DiT:
    return quantize(init_weights(DiT(config)).eval(), quant)


@pytest.mark.parametrize(
    "config, rows, grid, quant",
    [
        pytest.param(TINY, 1, (3, 8, 8), "none", id="tiny"),
        pytest.param(WIDE, 2, (4, 8, 8), "none", id="wide-local-cfg2"),
        # the int8 dequantize workspace is an upper bound: exact once activations dominate it
        pytest.param(TINY, 1, (4, 16, 16), "int8", id="tiny-int8"),
    ],
)
def test_dit_forward_peak_matches_measured(config, rows, grid, quant):
    model = _model(config, quant)
    packed, samples = _batch(rows, grid)
    with torch.no_grad(), LiveTensorBytes() as meter:
        model(packed)
    predicted = dit_forward_bytes(config, samples, CPU_PRECISION, quant, receptive_field=1).working
    print(f"measured {meter.peak} predicted {predicted} ({predicted / meter.peak - 1:+.2%})")
    assert abs(predicted / meter.peak - 1) <= DIT_TOLERANCE


@pytest.mark.parametrize("chunk", [16, 100])
def test_chunked_mlp_peak_matches_measured(chunk):
    """With mlp_chunk_tokens the MLP phase shrinks to one chunk's temporaries; still predicted."""
    model = _model(WIDE)
    packed, samples = _batch(2, (4, 8, 8))
    layout = model.layout(packed, ForwardOptions(mlp_chunk_tokens=chunk))
    with torch.no_grad(), LiveTensorBytes() as meter:
        model(packed, layout)
    predicted = dit_forward_bytes(WIDE, samples, CPU_PRECISION, receptive_field=1, mlp_chunk_tokens=chunk).working
    print(f"chunk {chunk}: measured {meter.peak} predicted {predicted} ({predicted / meter.peak - 1:+.2%})")
    assert abs(predicted / meter.peak - 1) <= DIT_TOLERANCE
    whole = dit_forward_bytes(WIDE, samples, CPU_PRECISION, receptive_field=1).working
    assert predicted < whole


def test_attention_phase_of_every_layer_kind_matches_measured():
    """Expert / shared, local / full layers of a CFG batch: the attention phase of each."""
    model = _model(TINY_SR_1080P)
    packed, samples = _batch(2, (4, 8, 8))
    tokens = packed.x.shape[0]
    meter, measured = LiveTensorBytes(), {}

    def before(i):
        meter.reset_peak()
        measured[i] = meter.current

    def after(i):
        measured[i] = meter.peak - measured[i]

    for i, layer in enumerate(model.block.layers):
        layer.attention.register_forward_pre_hook(lambda m, a, i=i: before(i))
        layer.attention.register_forward_hook(lambda m, a, o, i=i: after(i))
    with torch.no_grad(), meter:
        model(packed)
    for i in range(TINY_SR_1080P.num_layers):
        d = LayerDims.of(TINY_SR_1080P, i)
        spans = [s for sample in samples for s in sample_spans(sample, d.local, 1)]
        workspace = max(span_workspace(d, s, CPU_PRECISION) for s in spans)
        predicted = attention_phase_bytes(d, tokens, 4, True, workspace, CPU_PRECISION)
        assert abs(predicted / measured[i] - 1) <= DIT_TOLERANCE, (i, predicted, measured[i])


@pytest.mark.parametrize("config", [TINY, TINY_SR_1080P, FULL], ids=["tiny", "tiny_sr_1080p", "full"])
def test_weight_bytes_match_the_built_model(config):
    with torch.device("meta"):
        model = DiT(config)
    actual = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert dit_weight_bytes(config) == actual
    layer0 = sum(p.numel() * p.element_size() for p in model.block.layers[0].parameters())
    assert layer_weight_bytes(config, 0) == layer0


def test_full_model_is_15b_and_int8_halves_it():
    bf16 = dit_weight_bytes(FULL)
    assert 30.5e9 < bf16 < 30.7e9  # 15.3B parameters, bf16 linears + fp32 norms/adapter (issue 9: 30.6 GB)
    assert 0.5 < dit_weight_bytes(FULL, "int8") / bf16 < 0.51


def test_int8_weight_bytes_match_the_quantized_model():
    model = _model(TINY, "int8")
    actual = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert dit_weight_bytes(TINY, "int8") == actual


def test_streaming_keeps_the_heaviest_consecutive_layers():
    sizes = [layer_weight_bytes(FULL_SR_1080P, i) for i in range(40)]
    two = streamed_weight_bytes(FULL_SR_1080P, "none", 2)
    assert two == outer_weight_bytes(FULL_SR_1080P) + max(a + b for a, b in zip(sizes, sizes[1:] + sizes[:1]))
    assert two < 3.4e9  # two sandwich-expert layers


def test_decode_peak_matches_measured_untiled_and_tiled():
    shape = VideoVAEShape(params=0, decoder_base_dim=TINY_VIDEO_VAE_CONFIG["decoder_base_dim"],
                          num_res_blocks=TINY_VIDEO_VAE_CONFIG["num_res_blocks"])  # fmt: skip
    latent = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    peaks = {}
    for tiled in (False, True):
        vae = WanVideoVAE(tiny_video_vae())
        if tiled:
            enable_tiled_decode(vae, tile=64, stride=64)
        with LiveTensorBytes() as meter:
            vae.decode(latent)
        predicted = video_decode_bytes(shape, 3, 128, 128, 4, tiled, tile=64, stride=64)
        print(f"tiled={tiled}: measured {meter.peak} predicted {predicted} ({predicted / meter.peak - 1:+.1%})")
        assert abs(predicted / meter.peak - 1) <= VAE_TOLERANCE
        peaks[tiled] = meter.peak
    assert peaks[True] < 0.7 * peaks[False]


def test_plan_orders_offload_modes_and_reads_cards():
    peaks = {mode: plan(PlanConfig(resolution="540p", offload=mode)).peak.total for mode in ("none", "model", "layer")}
    assert peaks["layer"] < peaks["model"] < peaks["none"]
    assert plan(PlanConfig(resolution="256p", card=24, offload="layer", quant="int8")).fits
    assert not plan(PlanConfig(resolution="1080p", card=80, offload="none")).fits
    assert plan(PlanConfig(resolution="1080p", card=80, offload="model", vae_tiling=True)).fits
    cfg = plan(PlanConfig(resolution="256p", cfg_rows=2))
    assert cfg.stages[1].working > plan(PlanConfig(resolution="256p")).stages[1].working


def test_context_parallel_divides_activations():
    sample = [SampleTokens((32, 34, 60), 125, 300)]
    one = dit_forward_bytes(FULL_SR_1080P, sample, GPU_PRECISION).working
    two = dit_forward_bytes(FULL_SR_1080P, sample, GPU_PRECISION, cp=2).working
    assert 0.45 < two / one < 0.6


def test_cli_prints_a_plan(capsys):
    assert main(["resolution=540p_sr", "duration=5", "card=40GB", "offload=model", "quant=int8"]) == 0
    out = capsys.readouterr().out
    assert "sr_denoise" in out and "fits a 40 GiB card" in out
    assert main(["table", "duration=5"]) == 0
    assert "1080p" in capsys.readouterr().out
    assert main(["offload=sometimes"]) == 2
    assert main(["colour=blue"]) == 2


@pytest.mark.gpu
def test_gpu_forward_peak_matches_prediction():
    """bf16 linears and flash attention on CUDA against ``torch.cuda.max_memory_allocated``."""
    config = DiTConfig(num_layers=4, hidden_size=1024, head_dim=128, num_query_groups=2, text_in_channels=64,
                       mm_layers=(0, 3), gelu7_layers=(0, 1))  # fmt: skip
    model = init_weights(DiT(config)).eval().cuda()
    packed, samples = _batch(2, (8, 32, 32))
    packed = packed.to("cuda")
    with torch.no_grad():
        model(packed)  # warm-up: cuBLAS workspaces and kernel caches are not activations
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        model(packed)
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - base
    predicted = dit_forward_bytes(config, samples, GPU_PRECISION, receptive_field=1).working
    print(f"cuda measured {measured / GIB:.3f} GiB predicted {predicted / GIB:.3f} GiB")
    assert abs(predicted / measured - 1) <= 0.15


def test_plan_reads_the_runtime_configs():
    from magihuman.model.offload import OffloadConfig
    from magihuman.model.quant import QuantConfig

    config = PlanConfig.from_runtime(OffloadConfig("layer", 3, True), QuantConfig("int8"), resolution="540p_sr", card=24)
    assert (config.offload, config.resident_layers, config.vae_tiling, config.quant) == ("layer", 3, True, "int8")
    assert plan(config).fits


def test_largest_tensor_matches_a_built_model():
    for config in (DiTConfig(num_layers=4, hidden_size=256, head_dim=64, num_query_groups=2, text_in_channels=64,
                             mm_layers=(0, 3), gelu7_layers=(0,)), DiTConfig(num_layers=2, hidden_size=64,
                             head_dim=32, num_query_groups=1, text_in_channels=1024, mm_layers=(), gelu7_layers=())):  # fmt: skip
        with torch.device("meta"):
            model = DiT(config)
        assert largest_tensor_bytes(config) == max(t.numel() * t.element_size() for t in model.state_dict().values())


def test_fsdp_loads_one_shard_per_rank():
    """Sharded loading: each rank's device holds 1/P of the DiT, its host one tensor's rows; a whole load holds all."""
    from magihuman.model.presets import FULL

    full = dit_weight_bytes(FULL)
    sharded = plan(PlanConfig(resolution="1080p", cp=8, fsdp=True)).load
    assert sharded.device == -(-full // 8) and sharded.host == -(-largest_tensor_bytes(FULL) // 8)
    assert sharded.host < 0.2 * GIB
    whole = plan(PlanConfig(resolution="1080p", cp=8)).load
    assert whole.host == whole.device == full
    alone = plan(PlanConfig(resolution="1080p", fsdp=True, replicas=8))
    assert alone.load == sharded and alone.config.world_size == 8
    assert alone.peak.total < plan(PlanConfig(resolution="1080p")).peak.total - 20 * GIB


def test_parallel_setups_are_validated_like_the_runtime():
    with pytest.raises(ValueError, match="replicas=2 without fsdp"):
        PlanConfig(replicas=2)
    with pytest.raises(ValueError, match="fsdp runs with quant=none"):
        PlanConfig(fsdp=True, quant="int8")
    with pytest.raises(ValueError, match="must divide the 40 query heads"):
        plan(PlanConfig(cp=3))


def test_context_parallel_replicates_kv_heads():
    """One KV group over 2 ranks: each rank receives a copy of the KV head, so the exchange grows."""
    config = DiTConfig(num_layers=2, hidden_size=256, head_dim=64, num_query_groups=1, text_in_channels=64,
                       mm_layers=(), gelu7_layers=())  # fmt: skip
    sample = [SampleTokens((4, 8, 8), 17, 10)]
    shared = dit_forward_bytes(replace(config, num_query_groups=2), sample, GPU_PRECISION, cp=2).working
    replicated = dit_forward_bytes(config, sample, GPU_PRECISION, cp=2).working
    assert replicated > dit_forward_bytes(config, sample, GPU_PRECISION, cp=1).working / 2
    assert replicated >= shared - 4 * 256 * 64 * 3  # replicated KV moves as much as 2 groups would


def test_cli_prints_the_parallel_table(capsys):
    assert main(["parallel", "gpus=8", "resolution=1080p", "cfg_rows=2"]) == 0
    out = capsys.readouterr().out
    for label in ("fsdp8", "cp8", "cp8+fsdp8", "cp4+cfg", "cp4+cfg+fsdp8"):
        assert f" {label} " in out


def test_plan_reads_the_parallel_config():
    from magihuman.model.offload import OffloadConfig
    from magihuman.model.quant import QuantConfig
    from magihuman.parallel import ParallelConfig

    parallel = ParallelConfig(cp_size=4, cfg_parallel=True, fsdp=True)
    config = PlanConfig.from_runtime(OffloadConfig(), QuantConfig(), parallel, resolution="1080p", cfg_rows=2)
    assert (config.cp, config.cfg_parallel, config.fsdp, config.world_size) == (4, True, True, 8)
