"""DiT forward on CPU: the tiny preset and a mid-size config (SPEC 6: reference ~1.3 s on 2 cores).

``test_dit_forward_pr`` (the ``pr`` selection) runs the tiny preset on a 73-token clip: small
enough to count its instructions under valgrind in seconds, every layer still on the path.

The mid forward runs under each runtime option side by side in one session (same weights,
same packed input, the layout built once as the pipeline's velocity does): eager, the
whole forward as one compiled graph (``compile=model``) and each layer compiled
(``compile=layers``). Compilation happens in an untimed warm-up round; every compiled
output is checked against eager (rel L2 <= 1e-2).
"""

from __future__ import annotations

import pytest
import torch

from magihuman.clip import SampleTokens
from magihuman.harness.flops import forward_flops
from magihuman.model import DiT, Packed, pack
from magihuman.model.runtime import RuntimeConfig, apply_runtime

SAME_OUTPUT = 1e-2  # rel L2 of a compiled forward against eager (bf16 linears round differently once fused)


def forward(model: DiT, packed: Packed, layout=None) -> torch.Tensor:
    with torch.inference_mode():
        return model(packed, layout)


def describe(benchmark, model: DiT, packed: Packed) -> None:
    s = packed.samples[0]
    flops = forward_flops(model.config, [SampleTokens(s.grid, s.num_audio, s.num_text)])
    benchmark.group = "dit_forward"
    benchmark.extra_info.update(tokens=flops.tokens, gflop=round(flops.total / 1e9, 3))


def test_dit_forward_tiny(benchmark, tiny_model, tiny_clip):
    packed = pack(tiny_clip.video, tiny_clip.audio, tiny_clip.text)
    describe(benchmark, tiny_model, packed)
    out = benchmark(forward, tiny_model, packed)
    assert out.shape == (tiny_clip.tokens, 192) and torch.isfinite(out).all()


@pytest.mark.pr
def test_dit_forward_pr(benchmark, tiny_model, pr_clip):
    packed = pack(pr_clip.video, pr_clip.audio, pr_clip.text)
    describe(benchmark, tiny_model, packed)
    out = benchmark(forward, tiny_model, packed)
    assert out.shape == (pr_clip.tokens, 192) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def mid_eager_output(mid_model, mid_clip):
    packed = pack(mid_clip.video, mid_clip.audio, mid_clip.text)
    return forward(mid_model, packed, mid_model.layout(packed))


@pytest.mark.parametrize("compile_mode", ["none", "model", "layers"], ids=["eager", "compiled_model", "compiled_layers"])
def test_dit_forward_mid(benchmark, mid_model, mid_clip, mid_eager_output, compile_mode):
    model = DiT(mid_model.config).eval()
    model.load_state_dict(mid_model.state_dict())  # the same weights under every runtime
    apply_runtime(model, RuntimeConfig(compile=compile_mode))
    packed = pack(mid_clip.video, mid_clip.audio, mid_clip.text)
    layout = model.layout(packed)
    describe(benchmark, model, packed)
    benchmark.extra_info["runtime"] = compile_mode
    torch._dynamo.reset()
    out = benchmark.pedantic(forward, args=(model, packed, layout), rounds=5, warmup_rounds=1)
    assert out.shape == (1585, 192) and torch.isfinite(out).all()
    rel = ((out - mid_eager_output).norm() / mid_eager_output.norm()).item()
    benchmark.extra_info["rel_l2_vs_eager"] = rel
    assert rel <= SAME_OUTPUT
