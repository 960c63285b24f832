"""The DiT forward is one graph: ``torch.compile(model, fullgraph=True)`` over a prebuilt layout.

``DiT.layout`` does the host work (modality counts and order, rotary angles, attention
spans / block masks) once per packed layout; the forward over it must then trace without a
single graph break (``torch._dynamo.explain``), for full and local attention, v1 and v2
coordinates, one sample and a CFG batch, both attention backends, and every golden file.
Tracing costs ~10 s per case on 2 cores and runs in CI; an inductor compile of even the tiny
model costs minutes on this box, so the cases that compile for real and compare against eager
with ``aot_eager`` in CI (the same captured, functionalized graph) and with inductor (also
every golden file, against its golden tolerance) under ``--runslow``.
"""

from __future__ import annotations

import pytest
import torch

from magihuman.model import DiT, concat, pack, unpack
from magihuman.model.dit import ForwardOptions, init_weights
from magihuman.model.presets import TINY, TINY_SR_1080P
from tests.golden import golden_params, rel_l2
from tests.test_golden_dit import OUTPUT_TOLERANCE, build

# rel L2 of the inductor graph against eager on the same weights and inputs: the bf16 linears round at
# different points once inductor fuses around them (measured 3e-3 on the tiny preset).
COMPILED_TOLERANCE = 1e-2


pytestmark = pytest.mark.usefixtures("one_thread")  # nothing here is timed (see tests/conftest.py)


def packed_clip(coords_style: str, samples: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video, audio = torch.randn(48, 3, 4, 6, generator=g), torch.randn(9, 64, generator=g)
    texts = [torch.randn(5 + 6 * i, TINY.text_in_channels, generator=g) for i in range(samples)]
    return concat([pack(video, audio, text, coords_style, frame_receptive_field=1) for text in texts])


def graph_breaks(model: DiT, packed, options: ForwardOptions = ForwardOptions()) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(packed, model.layout(packed, options))
    return explained.graph_count, explained.graph_break_count, [str(b.reason) for b in explained.break_reasons]


CASES = [  # (architecture, attention backend, coordinates, samples): each axis covered by at least one case
    pytest.param(TINY, "sdpa", "v2", 1, id="full-sdpa-v2-single"),
    pytest.param(TINY_SR_1080P, "sdpa", "v1", 2, id="local-sdpa-v1-cfg"),
    pytest.param(TINY_SR_1080P, "flex", "v2", 2, id="local-flex-v2-cfg"),
    pytest.param(TINY, "flex", "v1", 1, id="full-flex-v1-single"),
]


@pytest.mark.parametrize("config, backend, coords_style, samples", CASES)
def test_forward_traces_as_one_graph(config, backend, coords_style, samples):
    model = init_weights(DiT(config)).eval()
    graphs, breaks, reasons = graph_breaks(model, packed_clip(coords_style, samples), ForwardOptions(backend))
    assert (graphs, breaks) == (1, 0), reasons


BACKENDS = [pytest.param("aot_eager", id="aot_eager"), pytest.param("inductor", id="inductor", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fullgraph_compile_matches_eager_on_a_local_cfg_batch(backend):
    """The compiled graph itself (no eager fallback possible with fullgraph=True) against eager."""
    model = init_weights(DiT(TINY_SR_1080P)).eval()
    packed = packed_clip("v1", samples=2)
    layout = model.layout(packed)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.inference_mode():
        eager = model(packed, layout)
        out = compiled(packed, layout)
    assert rel_l2(out, eager) <= COMPILED_TOLERANCE


@pytest.mark.golden
@pytest.mark.parametrize("path", golden_params("dit_*.safetensors"))
def test_golden_forward_traces_as_one_graph(path):
    model, packed, _ = build(path)
    graphs, breaks, reasons = graph_breaks(model, packed)
    print(f"{path.stem}: {graphs} graph, {breaks} graph breaks")
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.golden
@pytest.mark.slow
@pytest.mark.parametrize("path", golden_params("dit_*.safetensors"))
def test_golden_inductor_forward_keeps_parity(path):
    model, packed, g = build(path)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.inference_mode():
        out = compiled(packed, model.layout(packed))
    velocity_video, velocity_audio = unpack(out, packed)[0]
    errors = {
        "packed.out": rel_l2(out, g["packed.out"]),
        "velocity_video": rel_l2(velocity_video, g["out.velocity_video"][0]),
        "velocity_audio": rel_l2(velocity_audio, g["out.velocity_audio"][0]),
    }
    print(f"{path.stem} compiled: " + ", ".join(f"{k} rel L2 {v:.2e}" for k, v in errors.items()))
    assert all(v <= OUTPUT_TOLERANCE for v in errors.values()), errors
