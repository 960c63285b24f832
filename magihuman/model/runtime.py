"""How the DiT runs, never what it computes: the Hydra ``runtime`` group.

- ``compile``: ``none`` (eager), ``layers`` (each transformer layer its own graph) or
  ``model`` (the whole forward one graph: ``DiT.layout`` does the host work once per
  stage, so the forward over it has no host sync and no data-dependent shape).
- ``cuda_graphs``: replay the compiled graphs as CUDA graphs (``torch.compile``'s
  ``reduce-overhead`` mode), so a step launches no kernels from Python. Needs CUDA and a
  ``compile`` mode.
- ``attn_backend``: ``sdpa`` (one SDPA per attention span: flash / cuDNN kernels) or
  ``flex`` (one FlexAttention call over a block mask).
- ``attn_dtype``: the dtype attention runs in (``bfloat16``, ``float16``, ``float32``);
  ``null``: bf16 on CUDA, fp32 on CPU (where the golden vectors were computed).

``compile`` and ``cuda_graphs`` are applied to the module (:func:`apply_runtime`); the
attention switches reach the forward as :class:`~magihuman.model.dit.ForwardOptions`
(:meth:`RuntimeConfig.forward_options`), never as attributes on the module.
Weight precision is not here: it is ``quant=`` (:mod:`magihuman.model.quant`).
:func:`check_runtime` refuses impossible combinations when the config is read, before any
model loads, naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .dit import ATTN_BACKENDS, DiT, ForwardOptions
from .quant import FP8_MIN_CAPABILITY

CompileMode = Literal["none", "layers", "model"]
COMPILE_MODES = ("none", "layers", "model")
ATTN_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class RuntimeConfig:
    compile: CompileMode = "none"
    cuda_graphs: bool = False
    attn_backend: str = "sdpa"
    attn_dtype: str | None = None  # a key of ATTN_DTYPES; None: bf16 on CUDA, fp32 on CPU

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"runtime.compile={self.compile!r}: expected one of {COMPILE_MODES}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"runtime.attn_backend={self.attn_backend!r}: expected one of {ATTN_BACKENDS}")
        if self.attn_dtype is not None and self.attn_dtype not in ATTN_DTYPES:
            raise ValueError(f"runtime.attn_dtype={self.attn_dtype!r}: expected null or one of {tuple(ATTN_DTYPES)}")
        if self.cuda_graphs and self.compile == "none":
            raise ValueError("runtime.cuda_graphs=true needs runtime.compile=layers or model (graphs are captured "
                             "from the compiled code)")  # fmt: skip

    @property
    def label(self) -> str:
        """Short name for tables and sweep points, e.g. ``model+graphs/flex``."""
        dtype = f"/{self.attn_dtype}" if self.attn_dtype is not None else ""
        return f"{self.compile}{'+graphs' if self.cuda_graphs else ''}/{self.attn_backend}{dtype}"

    def forward_options(self, mlp_chunk_tokens: int | None = None) -> ForwardOptions:
        """The DiT's :class:`ForwardOptions` of this runtime, with the offload group's MLP chunking."""
        dtype = ATTN_DTYPES[self.attn_dtype] if self.attn_dtype is not None else None
        return ForwardOptions(self.attn_backend, dtype, mlp_chunk_tokens)


def check_runtime(runtime: RuntimeConfig, device: torch.device | str, quant: str = "none",
                  offload: str = "none", parallel: bool = False) -> None:  # fmt: skip
    """Raise ValueError naming the option when ``runtime`` (with ``quant``, ``offload`` and a
    multi-rank ``parallel``) cannot run on ``device``."""
    device = torch.device(device)
    if runtime.cuda_graphs and device.type != "cuda":
        raise ValueError(f"runtime.cuda_graphs=true needs a CUDA device; the device is {device}")
    if quant == "fp8":
        if device.type != "cuda":
            raise ValueError(f"quant=fp8 needs a CUDA GPU with fp8 tensor cores (sm_89+); the device is {device}")
        if torch.cuda.is_available() and torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
            raise ValueError(f"quant=fp8: {torch.cuda.get_device_name(device)} has no fp8 tensor cores (needs sm_89+)")
    if runtime.compile != "none" and offload == "layer":
        raise ValueError("runtime.compile with offload=layer is not supported: streamed layers move their weights "
                         "in hooks a compiled graph would not see; use runtime.compile=none")  # fmt: skip
    if runtime.compile != "none" and parallel:
        raise ValueError("runtime.compile with a multi-rank parallel config is not supported; use runtime.compile=none")


def apply_runtime(model: DiT, runtime: RuntimeConfig) -> DiT:
    """Compile ``model`` in place as ``runtime`` asks (the attention switches are not the
    module's: see :meth:`RuntimeConfig.forward_options`).

    ``fullgraph=True``: a graph break is an error, never a silent eager fallback. Shapes are
    static (``dynamic=False``): each packed layout (one per sampler stage) compiles once.
    """
    if runtime.compile == "none":
        return model
    options = dict(fullgraph=True, dynamic=False, mode="reduce-overhead" if runtime.cuda_graphs else None)
    if runtime.compile == "model":
        model.compile(**options)
    else:
        for layer in model.block.layers:
            layer.compile(**options)
    return model
