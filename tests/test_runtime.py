"""The ``runtime`` config group: validated when read, applied by the pipeline, recorded by the sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from magihuman.model import DiT
from magihuman.model.dit import init_weights
from magihuman.model.offload import OffloadConfig
from magihuman.model.presets import TINY
from magihuman.model.quant import QuantConfig
from magihuman.model.runtime import RuntimeConfig, apply_runtime, check_runtime
from magihuman.pipeline import MagiHumanPipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(compile="graph"), "runtime.compile='graph'"),
        (dict(attn_backend="xformers"), "runtime.attn_backend='xformers'"),
        (dict(cuda_graphs=True), "runtime.cuda_graphs=true needs runtime.compile"),
    ],
)
def test_invalid_values_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        RuntimeConfig(**kwargs)


@pytest.mark.parametrize(
    "runtime, quant, offload, message",
    [
        (RuntimeConfig(compile="model", cuda_graphs=True), "none", "none", "runtime.cuda_graphs=true needs a CUDA"),
        (RuntimeConfig(), "fp8", "none", "quant=fp8 needs a CUDA GPU"),
        (RuntimeConfig(compile="layers"), "none", "layer", "offload=layer"),
    ],
)
def test_combinations_the_device_cannot_run_fail_at_config_time(runtime, quant, offload, message):
    with pytest.raises(ValueError, match=message):
        check_runtime(runtime, "cpu", quant, offload)


def test_pipeline_refuses_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match="runtime.cuda_graphs=true needs a CUDA device"):
        MagiHumanPipeline.from_preset("tiny", cache_dir=tmp_path, device="cpu",
                                      runtime=RuntimeConfig(compile="model", cuda_graphs=True))  # fmt: skip
    assert not any(tmp_path.iterdir())  # the tiny release was never written
    with pytest.raises(ValueError, match="quant=fp8"):
        MagiHumanPipeline.from_preset("tiny", cache_dir=tmp_path, device="cpu", quant=QuantConfig("fp8"),
                                      offload=OffloadConfig())  # fmt: skip


@pytest.mark.parametrize("group", ["eager", "compiled", "fast"])
def test_every_runtime_yaml_builds_and_labels(group):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("generate", overrides=[f"runtime={group}"])
    runtime = instantiate(cfg.runtime)
    assert isinstance(runtime, RuntimeConfig) and runtime.label.startswith(runtime.compile)
    assert cfg.model.runtime == cfg.runtime  # the pipeline gets the same group


def test_apply_runtime_compiles_in_place():
    """``compile=model`` compiles the module's call (still a DiT); ``layers`` each layer; the backend is set."""
    model = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig(compile="model", attn_backend="flex"))
    assert isinstance(model, DiT) and model._compiled_call_impl is not None and model.attn_backend == "flex"
    layered = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig(compile="layers"))
    assert layered._compiled_call_impl is None
    assert all(layer._compiled_call_impl is not None for layer in layered.block.layers)
    eager = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig())
    assert eager._compiled_call_impl is None and eager.attn_backend == "sdpa"
    assert torch.compiler.is_compiling() is False
