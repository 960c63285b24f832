"""The ``runtime`` config group: validated when read, applied by the pipeline, recorded by the sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from magihuman.model import DiT, ForwardOptions
from magihuman.model.dit import init_weights
from magihuman.model.offload import OffloadConfig
from magihuman.model.presets import TINY
from magihuman.model.quant import QuantConfig
from magihuman.model.runtime import RuntimeConfig, apply_runtime, check_runtime
from magihuman.pipeline import GenerationRequest, MagiHumanPipeline
from magihuman.sampling import SamplerConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(compile="graph"), "runtime.compile='graph'"),
        (dict(attn_backend="xformers"), "runtime.attn_backend='xformers'"),
        (dict(attn_dtype="bf16"), "runtime.attn_dtype='bf16': expected null or one of"),
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
    """``compile=model`` compiles the module's call (still a DiT); ``layers`` each layer; nothing else is set."""
    before = set(vars(init_weights(DiT(TINY))))
    model = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig(compile="model", attn_backend="flex"))
    assert isinstance(model, DiT) and model._compiled_call_impl is not None
    layered = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig(compile="layers"))
    assert layered._compiled_call_impl is None
    assert all(layer._compiled_call_impl is not None for layer in layered.block.layers)
    eager = apply_runtime(init_weights(DiT(TINY)), RuntimeConfig(attn_backend="flex", attn_dtype="bfloat16"))
    assert eager._compiled_call_impl is None and set(vars(eager)) == before  # no switch written onto the module
    assert torch.compiler.is_compiling() is False


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(
    "runtime, offload, expected",
    [
        (RuntimeConfig(), OffloadConfig(), ForwardOptions()),
        (RuntimeConfig(attn_backend="flex", attn_dtype="bfloat16"), OffloadConfig(mlp_chunk_tokens=64),
         ForwardOptions("flex", torch.bfloat16, 64)),
        (RuntimeConfig(attn_dtype="float32"), OffloadConfig(mode="layer", mlp_chunk_tokens=8192),
         ForwardOptions("sdpa", torch.float32, 8192)),
    ],
)  # fmt: skip
def test_pipeline_forward_options_come_from_runtime_and_offload(tmp_path, monkeypatch, runtime, offload, expected):
    """The pipeline builds its ForwardOptions once from the two groups, and every DiT stage runs with them."""
    pipeline = MagiHumanPipeline.from_preset("tiny", cache_dir=tmp_path, device="cpu", runtime=runtime, offload=offload)
    assert pipeline.forward_options == expected
    built, layout = [], DiT.layout

    def spy(self, packed, options=ForwardOptions()):
        built.append(options)
        return layout(self, packed, options)

    monkeypatch.setattr(DiT, "layout", spy)
    sampler = SamplerConfig("dmd", num_steps=1, progress=False, dit="distill")
    pipeline.generate(GenerationRequest("a face", duration=0.2, seed=0, sampler=sampler))
    assert built == [expected]  # one layout for the one stage, built with the pipeline's options
