"""The analytic FLOP model against a hand computation and against torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from magihuman.harness.devices import device_peak, lookup_peak, mfu
from magihuman.clip import SampleTokens, clip_tokens, resolution_tokens
from magihuman.harness.flops import block_params_per_token, forward_flops, local_attention_pairs
from magihuman.model import DiT, DiTConfig, pack
from magihuman.model.dit import init_weights
from magihuman.components.arch import build_dit
from magihuman.harness.memory import FakeDevice
from magihuman.model.presets import FULL, FULL_SR_1080P, TINY

# 3 layers: 0 = expert + gelu7, 1 = shared swiglu7 + local attention, 2 = expert + swiglu7.
SMALL = DiTConfig(
    num_layers=3,
    hidden_size=64,
    head_dim=16,
    num_query_groups=2,
    text_in_channels=40,
    mm_layers=(0, 2),
    gelu7_layers=(0,),
    local_attn_layers=(1,),
)
SMALL_MID = DiTConfig(num_layers=3, hidden_size=256, head_dim=64, num_query_groups=2, text_in_channels=64,
                      mm_layers=(0,), gelu7_layers=(0,), local_attn_layers=(1, 2))  # fmt: skip
SAMPLE = SampleTokens(grid=(5, 2, 3), num_audio=17, num_text=7)  # 30 video tokens, 54 in all


def test_hand_computed_small_architecture():
    # Attention per token: qkv 64 x (64 q + 2*32 kv + 4 gates) + proj 64 x 64.
    attention = 64 * 132 + 64 * 64  # 12544
    gelu_mlp = 64 * 256 + 256 * 64  # 4 * hidden
    swiglu_mlp = 64 * 2 * 168 + 168 * 64  # int(64 * 8 / 3) // 4 * 4 = 168
    per_token = (attention + gelu_mlp) + 2 * (attention + swiglu_mlp)
    assert block_params_per_token(SMALL) == per_token == 134912

    # Local layer, rf=1, 5 frames of 6 tokens, 24 audio+text tokens: frame windows 2,3,3,3,2.
    local = 6 * (13 * 6 + 5 * 24) + 24 * 54
    assert local_attention_pairs(SAMPLE, receptive_field=1) == local == 2484

    f = forward_flops(SMALL, [SAMPLE], receptive_field=1)
    assert f.tokens == 54
    assert f.block_linear == 2 * per_token * 54
    assert f.adapter_head == 30 * 2 * 64 * (192 + 192) + 17 * 2 * 64 * (64 + 64) + 7 * 2 * 64 * 40
    assert f.attention == 4 * 4 * 16 * (2 * 54**2 + local)  # 4 heads x head_dim 16


def test_matches_torch_flop_counter_on_a_real_forward():
    """Every matmul of the forward (linears, and attention via the math SDPA backend) is counted."""
    model = init_weights(DiT(SMALL)).eval()
    g = torch.Generator().manual_seed(0)
    packed = pack(torch.randn(48, 5, 4, 6, generator=g), torch.randn(17, 64, generator=g),
                  torch.randn(7, 40, generator=g), frame_receptive_field=1)  # fmt: skip
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(packed)
    assert counter.get_total_flops() == forward_flops(SMALL, [SAMPLE], receptive_field=1).total


def test_cfg_batch_is_the_sum_of_its_samples():
    a, b = SAMPLE, SampleTokens(grid=(5, 2, 3), num_audio=17, num_text=20)
    both = forward_flops(SMALL, [a, b])
    assert both.total == forward_flops(SMALL, [a]).total + forward_flops(SMALL, [b]).total
    assert both.tokens == a.length + b.length


def test_clip_token_counts():
    s256 = resolution_tokens("256p", 5)
    assert s256.grid == (32, 8, 14) and s256.num_audio == 126 and s256.length == 3584 + 126 + 300
    assert resolution_tokens("540p_sr", 5).num_video == 32 * 16 * 28
    assert resolution_tokens("540p", 5).num_video == 32 * 34 * 60  # the API's 540p runs the 1080p SR path
    assert resolution_tokens("1080p", 5, text_tokens=0).length == 32 * 34 * 60 + 126
    assert clip_tokens(1, 448, 256, text_tokens=8).grid == (7, 8, 14)  # 26 frames -> 7 latent frames
    with pytest.raises(ValueError, match="not a multiple"):
        clip_tokens(1, 450, 256)


def test_full_size_against_the_spec_compute_floor():
    """SPEC 5: 256p distilled 8 steps ~8.3e14 FLOP; 1080p SR 5 steps ~1.9e16 FLOP."""
    assert abs(block_params_per_token(FULL) - 10.9e9) < 0.05e9
    base = forward_flops(FULL, [resolution_tokens("256p", 5)]).total * 8
    assert 7.5e14 < base < 9.0e14  # 8.06e14 with 300 text tokens (8.28e14 with 400)
    sr = forward_flops(FULL_SR_1080P, [resolution_tokens("1080p", 5)]).total * 5
    assert 1.8e16 < sr < 2.0e16  # 1.91e16; full attention everywhere would be 2.49e16
    dense = forward_flops(FULL, [resolution_tokens("1080p", 5)]).total * 5
    assert dense > 1.25 * sr


def test_device_peaks_and_mfu():
    assert lookup_peak("NVIDIA H100 80GB HBM3").bf16_dense_tflops == 989
    assert lookup_peak("NVIDIA H100 PCIe").bf16_dense_tflops == 756
    assert lookup_peak("NVIDIA H200").bf16_dense_tflops == 989
    assert lookup_peak("NVIDIA A100-SXM4-80GB").bf16_dense_tflops == 312
    assert lookup_peak("Some CPU") is None
    assert device_peak("cpu") is None
    peak = device_peak("cpu", override_tflops=2.0)
    assert mfu(1e12, 1.0, peak) == pytest.approx(0.5)
    assert mfu(1e12, 1.0, None) is None


@pytest.mark.parametrize("config", [TINY, SMALL_MID, FULL], ids=["tiny", "mid", "full"])
def test_matches_torch_flop_counter_on_fake_tensors(config):
    """The analytic count against every matmul FlopCounterMode sees in the real forward of the
    model built on meta, at a 256p clip's tokens (fake tensors: shapes only, the full size in a second)."""
    fake = FakeDevice()
    model = fake.module(build_dit(config, "meta"))
    tokens = clip_tokens(1, 448, 256, text_tokens=50)
    t, h, w = tokens.grid
    video = fake.tensor(config.video_in_channels // 4, t, 2 * h, 2 * w)
    audio, text = fake.tensor(tokens.num_audio, config.audio_in_channels), fake.tensor(50, config.text_in_channels)
    packed = pack(video, audio, text)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(packed)
    assert counter.get_total_flops() == forward_flops(config, [tokens]).total
