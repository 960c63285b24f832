"""DiT structure and behaviour beyond the golden files: presets, batching, local attention."""

from __future__ import annotations

import pytest
import torch

from magihuman.model import DiT, DiTConfig, ForwardOptions, concat, pack, unpack
from magihuman.model.dit import init_weights
from magihuman.model.packing import patchify, unpatchify
from magihuman.model.presets import FULL, FULL_SR_1080P, SR_1080P_FULL_ATTN_LAYERS, TINY, preset
from magihuman.model.rope import fourier_angles, rope_bands

FULL_PARAMS = 15.30e9
FULL_KEYS = 331  # adapter (3 weights, 3 biases, rope bands) + 40 x 8 + 2 final norms + 2 heads


def meta_model(config: DiTConfig) -> DiT:
    with torch.device("meta"):
        return DiT(config)


def test_full_size_parameter_and_key_count():
    state = meta_model(FULL).state_dict()
    assert len(state) == FULL_KEYS
    assert abs(sum(t.numel() for t in state.values()) - FULL_PARAMS) <= 0.01e9
    qkv = state["block.layers.10.attention.linear_qkv.weight"]
    assert tuple(qkv.shape) == (5120 + 2 * 1024 + 40, 5120) and qkv.dtype == torch.bfloat16
    assert tuple(state["block.layers.0.attention.linear_qkv.weight"].shape) == (3 * 7208, 5120)
    assert tuple(state["block.layers.0.mlp.up_gate_proj.weight"].shape) == (3 * 20480, 5120)
    assert tuple(state["block.layers.20.mlp.up_gate_proj.weight"].shape) == (2 * 13652, 5120)
    assert state["adapter.video_embedder.weight"].dtype == torch.float32


def test_sr_1080p_local_layers():
    model = meta_model(FULL_SR_1080P)
    full = [i for i, layer in enumerate(model.block.layers) if not layer.attention.local]
    assert full == list(SR_1080P_FULL_ATTN_LAYERS) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert all(layer.attention.local for layer in model.block.layers[32:])
    assert preset("full_sr_540p").local_attn_layers == ()


def test_unknown_preset_and_config_keys_are_named():
    with pytest.raises(ValueError, match="unknown DiT preset 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match=r"unknown DiT config keys \['num_expertz'\]"):
        DiTConfig.from_dict({"num_expertz": 3})


def test_patchify_round_trip_uses_output_channel_order():
    latent = torch.randn(48, 3, 4, 6)
    tokens = patchify(latent)
    assert tokens.shape == (3 * 2 * 3, 192)
    assert torch.equal(tokens[0, :4], latent[0, 0, :2, :2].flatten())  # (C, pH, pW) in
    out_order = tokens.reshape(-1, 48, 2, 2).permute(0, 2, 3, 1).reshape(-1, 192)  # -> (pH, pW, C)
    assert torch.equal(unpatchify(out_order, 48, (3, 2, 3)), latent)


VARIANTS = {
    "tiny": TINY,
    "single_kv_group_post_norm": DiTConfig(
        num_layers=3, hidden_size=128, head_dim=64, num_query_groups=1, text_in_channels=16,
        mm_layers=(0, 2), gelu7_layers=(0,), post_norm_layers=(1, 2), enable_attn_gating=False,
    ),
}  # fmt: skip


def random_sample(t=3, h=6, w=10, text_len=5, text_channels=TINY.text_in_channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(48, t, h, w, generator=g),
        torch.randn((t - 1) * 4 + 1, 64, generator=g),
        torch.randn(text_len, text_channels, generator=g),
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_batched_forward_equals_separate_forwards(name):
    """Two samples with different text lengths in one packed sequence == two forwards."""
    config = VARIANTS[name]
    model = init_weights(DiT(config)).eval()
    a = pack(*random_sample(text_len=5, text_channels=config.text_in_channels, seed=1))
    b = pack(*random_sample(text_len=1, text_channels=config.text_in_channels, seed=2))
    with torch.no_grad():
        both = unpack(model(concat([a, b])), concat([a, b]))
        alone = [unpack(model(p), p)[0] for p in (a, b)]
    for (bv, ba), (sv, sa) in zip(both, alone):
        torch.testing.assert_close(bv, sv, rtol=0, atol=1e-5)
        torch.testing.assert_close(ba, sa, rtol=0, atol=1e-5)


def dense_local_mask(packed) -> torch.Tensor:
    """Test oracle only: the local-attention rule as a dense boolean mask."""
    s = packed.samples[0]
    frame = torch.full((s.length,), -1)
    frame[: s.num_video] = torch.arange(s.num_video) // (s.grid[1] * s.grid[2])
    video = frame >= 0
    rf = (s.local_k_ranges[0, 1] // (s.grid[1] * s.grid[2])).item() - 1  # frame 0 sees [0, rf + 1)
    near = (frame[:, None] - frame[None, :]).abs() <= rf
    return ~video[:, None] | ~video[None, :] | near


def test_local_attention_equals_dense_masked_attention(monkeypatch):
    config = DiTConfig(**{**TINY.to_dict(), "local_attn_layers": (0, 2, 3)})
    model = init_weights(DiT(config)).eval()
    packed = pack(*random_sample(t=5, h=4, w=6), frame_receptive_field=1)
    mask = dense_local_mask(packed)
    assert not mask.all() and mask[: 6, 18:24].logical_not().all()  # frame 0 does not see frame 3
    with torch.no_grad():
        ours = model(packed)
    import magihuman.model.dit as dit

    def dense(q, k, v, spans, dtype):
        local = len(spans) > 1
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
            attn_mask=mask if local else None, enable_gqa=True,
        )  # fmt: skip
        return out.transpose(0, 1)

    monkeypatch.setattr(dit, "sdpa_over_spans", dense)
    with torch.no_grad():
        reference = model(packed)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_backend_matches_sdpa_on_batched_local_attention():
    config = DiTConfig(**{**TINY.to_dict(), "local_attn_layers": (0, 3)})
    model = init_weights(DiT(config)).float().eval()  # fp32 linears: no bf16 rounding flips
    packed = concat([pack(*random_sample(t=4, seed=s), frame_receptive_field=1) for s in (1, 2)])
    with torch.no_grad():
        sdpa = model(packed)
        flex = model(packed, model.layout(packed, ForwardOptions(attn_backend="flex")))
    torch.testing.assert_close(flex, sdpa, rtol=0, atol=1e-4)


def test_local_attention_with_wide_field_equals_full_attention():
    local = init_weights(DiT(DiTConfig(**{**TINY.to_dict(), "local_attn_layers": (1, 2, 4)}))).eval()
    full = init_weights(DiT(TINY)).eval()
    packed = pack(*random_sample(t=4), frame_receptive_field=4)
    with torch.no_grad():
        torch.testing.assert_close(local(packed), full(packed), rtol=0, atol=1e-5)


def test_one_sr_text_token_is_not_rotated():
    """v1 text has reference 2: one token (size 1) has no scale, but sits at position 0, where
    every scale gives angle 0; it packs and runs (the release's formula would give 0 * inf)."""
    video, audio, _ = random_sample()
    packed = pack(video, audio, torch.randn(1, TINY.text_in_channels), coords_style="v1")
    sin, cos = fourier_angles(packed.coords[-1:], rope_bands(TINY.head_dim))
    assert torch.equal(sin, torch.zeros_like(sin)) and torch.equal(cos, torch.ones_like(cos))
    with torch.no_grad():
        assert torch.isfinite(init_weights(DiT(TINY)).eval()(packed)).all()


def test_rope_rejects_impossible_coordinates():
    """Size 1, reference not 1, position not 0: caught on the host where coordinates are made
    (packing), and by the token-level forward."""
    video, audio, _ = random_sample()
    text = torch.randn(1, TINY.text_in_channels)
    model = init_weights(DiT(TINY)).eval()
    packed = pack(video, audio, text, coords_style="v2")
    coords = packed.coords.clone()
    coords[-1, 6] = 2.0
    with pytest.raises(ValueError, match="rotary coordinates"):
        model.forward_tokens(packed.x, coords, packed.modality, model.layout(packed).attention)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_mlp_is_exact_on_a_cfg_batch(chunk):
    """Chunks cut across modality boundaries and the CFG permutation; the output is identical."""
    model = init_weights(DiT(TINY)).eval()
    packed = concat([pack(*random_sample(seed=s, text_len=3 + s)) for s in (1, 2)])
    with torch.no_grad():
        whole = model(packed)
        layout = model.layout(packed, ForwardOptions(mlp_chunk_tokens=chunk))
        chunked = model(packed, layout)
    assert layout.options.mlp_chunk_tokens == chunk
    assert torch.equal(chunked, whole)


def test_chunking_reaches_every_mlp_through_the_layout(monkeypatch):
    """The layout's options, not module state, decide how each MLP runs."""
    model = init_weights(DiT(TINY)).eval()
    packed = pack(*random_sample())
    seen = []
    for mlp in (layer.mlp for layer in model.block.layers):
        monkeypatch.setattr(mlp, "forward", lambda x, router, chunk_tokens=None: seen.append(chunk_tokens) or x)
    with torch.no_grad():
        model(packed, model.layout(packed, ForwardOptions(mlp_chunk_tokens=5)))
        model(packed)
    assert seen == [5] * TINY.num_layers + [None] * TINY.num_layers


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mlp_chunk_tokens=0), "mlp_chunk_tokens must be an integer >= 1"),
        (dict(mlp_chunk_tokens=2.5), "mlp_chunk_tokens must be an integer >= 1"),
        (dict(attn_backend="xformers"), "attn_backend='xformers'"),
        (dict(attn_dtype="bf16"), "attn_dtype='bf16'"),
        (dict(attn_dtype=torch.int8), "attn_dtype=torch.int8"),
    ],
)
def test_forward_options_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ForwardOptions(**kwargs)


def test_attention_dtype_follows_the_options():
    """None: fp32 on CPU (the golden vectors), bf16 on CUDA; an explicit dtype reaches the kernel."""
    assert ForwardOptions().attention_dtype("cpu") == torch.float32
    assert ForwardOptions().attention_dtype("cuda") == torch.bfloat16
    model = init_weights(DiT(TINY)).eval()
    packed = pack(*random_sample())
    assert model.layout(packed, ForwardOptions(attn_dtype=torch.bfloat16)).attention.dtype == torch.bfloat16
    with torch.no_grad():
        fp32 = model(packed)
        bf16 = model(packed, model.layout(packed, ForwardOptions(attn_dtype=torch.bfloat16)))
    assert not torch.equal(fp32, bf16)  # the dtype is really used
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=5e-2)


def test_write_latents_equals_packing_anew():
    from magihuman.model.packing import write_latents

    first, second = random_sample(seed=1), random_sample(seed=2)
    packed = concat([pack(*first), pack(*first)])
    write_latents(packed, 1, second[0], second[1])
    fresh = concat([pack(*first), pack(second[0], second[1], first[2])])
    assert torch.equal(packed.x, fresh.x) and torch.equal(packed.coords, fresh.coords)
