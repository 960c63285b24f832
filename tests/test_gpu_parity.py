"""GPU parity: the golden files through bf16 SDPA (flash / cuDNN) on CUDA, and FlexAttention."""

from __future__ import annotations

import pytest
import torch

from magihuman.model import unpack
from tests.golden import golden_params, rel_l2
from tests.test_golden_dit import OUTPUT_TOLERANCE, build

pytestmark = [pytest.mark.gpu, pytest.mark.golden]


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("path", golden_params("dit_*.safetensors"))
def test_cuda_bf16_attention_matches_golden(path, backend):
    model, packed, g = build(path)
    model = model.cuda()
    model.attn_backend = backend
    with torch.no_grad():
        out = model(packed.to("cuda")).cpu()
    velocity_video, velocity_audio = unpack(out, packed)[0]
    errors = {
        "packed.out": rel_l2(out, g["packed.out"]),
        "velocity_video": rel_l2(velocity_video, g["out.velocity_video"][0]),
        "velocity_audio": rel_l2(velocity_audio, g["out.velocity_audio"][0]),
    }
    print(f"{path.stem} cuda {backend}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert all(v <= OUTPUT_TOLERANCE for v in errors.values()), errors
