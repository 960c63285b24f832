"""GPU parity: the golden files through bf16 SDPA (flash / cuDNN) on CUDA, and FlexAttention."""

from __future__ import annotations

import pytest

from magihuman.model import ForwardOptions
from tests.golden import golden_params
from tests.test_golden_dit import OUTPUT_TOLERANCE, build, output_errors

pytestmark = [pytest.mark.gpu, pytest.mark.golden]


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("path", golden_params("dit_*.safetensors"))
def test_cuda_bf16_attention_matches_golden(path, backend):
    model, packed, g = build(path)
    errors = output_errors(model.cuda(), packed.to("cuda"), g, ForwardOptions(attn_backend=backend))
    print(f"{path.stem} cuda {backend}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert all(v <= OUTPUT_TOLERANCE for v in errors.values()), errors
