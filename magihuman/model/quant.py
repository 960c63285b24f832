"""Weight quantization of the DiT's transformer linears: int8 (any device) and fp8 (sm89+ GPUs).

:func:`quantize` swaps every :class:`~magihuman.model.dit.ExpertLinear` for a quantized one
with the same forward signature ``(x, router, out_dtype)``. Scales are per output channel;
experts are stacked along the output dim, so every expert's rows get their own scales.
Norms, the adapter and the output heads stay as they are (fp32, small).

- ``int8``: weight-only, symmetric ``absmax / 127`` per row. The forward dequantizes one
  expert block at a time to the compute dtype and runs an ordinary bf16 matmul, so it runs
  on CPU and GPU alike with the same numerics. (``torch._weight_int8pack_mm`` exists for
  both, but its CUDA kernel is a plain fp32 loop without tensor cores.) Weight bytes halve;
  the transient costs one dequantized expert block.
- ``fp8``: e4m3 weights with per-row scales, activations quantized per token on the fly,
  and ``torch._scaled_mm`` with row-wise scales (what torchao's float8 row-wise recipe runs).
  It needs a CUDA GPU of compute capability 8.9 or newer; anywhere else :func:`quantize`
  raises :class:`QuantizationUnsupported` saying so. torchao 0.18 installs against
  torch 2.14, but it is not needed: the kernel is in core PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dit import ExpertLinear, ModalityRouter

QuantMode = Literal["none", "int8", "fp8"]
QUANT_MODES: tuple[str, ...] = ("none", "int8", "fp8")
INT8_MAX = 127.0
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper
SCALED_MM_ALIGN = 16  # torch._scaled_mm needs both matrix dims divisible by 16


class QuantizationUnsupported(RuntimeError):
    """The asked quantization cannot run here; the message says why."""


@dataclass(frozen=True)
class QuantConfig:
    """Hydra ``quant`` group: which weight quantization the DiTs get after loading."""

    mode: QuantMode = "none"

    def __post_init__(self) -> None:
        if self.mode not in QUANT_MODES:
            raise ValueError(f"unknown quantization mode {self.mode!r}; expected one of {QUANT_MODES}")


def linear_weight_bytes(out_features: int, in_features: int, mode: QuantMode, num_experts: int = 1) -> int:
    """Stored bytes of one :class:`ExpertLinear` (``out_features`` per expert) as ``mode`` keeps it.

    bf16; or 1-byte codes plus an fp32 scale per row (fp8 pads rows and columns to 16).
    """
    if mode == "none":
        return 2 * out_features * in_features * num_experts
    if mode == "fp8":
        out_features += -out_features % SCALED_MM_ALIGN
        in_features += -in_features % SCALED_MM_ALIGN
    return (out_features * in_features + 4 * out_features) * num_experts


def _row_scales(weight: Tensor, qmax: float) -> Tensor:
    """Symmetric per-row scales ``absmax / qmax`` in fp32; all-zero rows get scale 1."""
    absmax = weight.float().abs().amax(dim=1)
    return torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))


class QuantizedExpertLinear(nn.Module):
    """Common parts of the quantized linears: shape, experts, compute dtype, and the ``weight`` stand-in.

    ``qweight`` (codes, ``[experts * out, in]``) and ``scale`` (fp32, one per row) are buffers,
    so they move with ``.to()`` and stream with the layer.
    """

    def __init__(self, qweight: Tensor, scale: Tensor, num_experts: int, compute_dtype: torch.dtype):
        super().__init__()
        self.num_experts, self.compute_dtype = num_experts, compute_dtype
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)

    @property
    def weight(self) -> Tensor:
        """A meta tensor of the logical shape in the compute dtype.

        The DiT reads ``linear.weight.dtype`` to choose the attention output's dtype; this keeps
        that answer (bf16) without holding a dequantized copy. Its data is not the weight.
        """
        return torch.empty(self.qweight.shape, dtype=self.compute_dtype, device="meta")

    def forward(self, x: Tensor, router: ModalityRouter, out_dtype: torch.dtype) -> Tensor:
        x = x.to(self.compute_dtype)
        if self.num_experts == 1:
            y = self.matmul(x, self.qweight, self.scale)
        else:
            blocks = zip(router.split(x), self.qweight.chunk(self.num_experts), self.scale.chunk(self.num_experts))
            y = torch.cat([self.matmul(chunk, q, s) for chunk, q, s in blocks])
        return y.to(out_dtype)

    def matmul(self, x: Tensor, qweight: Tensor, scale: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        rows, cols = self.qweight.shape
        return f"in={cols}, out={rows // self.num_experts}, experts={self.num_experts}, codes={self.qweight.dtype}"


class Int8ExpertLinear(QuantizedExpertLinear):
    """Weight-only int8: dequantize one expert block to the compute dtype, then a dense matmul."""

    @classmethod
    def from_linear(cls, linear: ExpertLinear) -> Int8ExpertLinear:
        w = linear.weight.detach()
        scale = _row_scales(w, INT8_MAX)
        q = torch.round(w.float() / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
        return cls(q, scale, linear.num_experts, w.dtype)

    def matmul(self, x: Tensor, qweight: Tensor, scale: Tensor) -> Tensor:
        # int8 codes are exact in bf16; the scale is folded into the weight block.
        return F.linear(x, qweight.to(x.dtype) * scale.to(x.dtype)[:, None])


class Fp8ExpertLinear(QuantizedExpertLinear):
    """e4m3 weights and per-token e4m3 activations through ``torch._scaled_mm`` (row-wise scales).

    Rows and columns are zero-padded to multiples of 16 for the kernel (7208 qkv rows and
    13652 MLP columns are not); ``out_features`` keeps the logical row count per expert.
    """

    def __init__(self, qweight: Tensor, scale: Tensor, num_experts: int, compute_dtype: torch.dtype,
                 out_features: int, in_features: int):  # fmt: skip
        super().__init__(qweight, scale, num_experts, compute_dtype)
        self.out_features, self.in_features = out_features, in_features

    @property
    def weight(self) -> Tensor:
        shape = (self.out_features * self.num_experts, self.in_features)
        return torch.empty(shape, dtype=self.compute_dtype, device="meta")

    @classmethod
    def from_linear(cls, linear: ExpertLinear) -> Fp8ExpertLinear:
        w = linear.weight.detach()
        experts = linear.num_experts
        out, inp = w.shape[0] // experts, w.shape[1]
        pad_out, pad_in = -out % SCALED_MM_ALIGN, -inp % SCALED_MM_ALIGN
        blocks = [F.pad(b.float(), (0, pad_in, 0, pad_out)) for b in w.chunk(experts)]
        padded = torch.cat(blocks)
        scale = _row_scales(padded, FP8_MAX)
        q = (padded / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        return cls(q, scale, experts, w.dtype, out, inp)

    def matmul(self, x: Tensor, qweight: Tensor, scale: Tensor) -> Tensor:
        if not x.is_cuda:
            raise QuantizationUnsupported("fp8 linears run on CUDA only (torch._scaled_mm): use an sm89+ GPU")
        if x.shape[0] == 0:  # an expert without tokens
            return x.new_empty(0, self.out_features)
        x = F.pad(x, (0, qweight.shape[1] - x.shape[1]))
        x_scale = _row_scales(x, FP8_MAX)[:, None]
        x_fp8 = (x.float() / x_scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        y = torch._scaled_mm(x_fp8, qweight.t(), scale_a=x_scale, scale_b=scale[None, :], out_dtype=self.compute_dtype)
        return y[:, : self.out_features]


def check_fp8_supported(device: torch.device | None = None) -> None:
    """Raise :class:`QuantizationUnsupported` unless ``device`` (default: the current CUDA device) does fp8 matmuls."""
    if not torch.cuda.is_available():
        raise QuantizationUnsupported(
            "fp8 quantization needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper); "
            "no CUDA device is available. "
            "Use quant=int8, which runs anywhere."
        )
    device = device or torch.device("cuda", torch.cuda.current_device())
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise QuantizationUnsupported(
            f"fp8 quantization needs compute capability >= 8.9; {torch.cuda.get_device_name(device)} has "
            f"{capability[0]}.{capability[1]}. Use quant=int8."
        )


_QUANTIZERS = {"int8": Int8ExpertLinear, "fp8": Fp8ExpertLinear}


@torch.no_grad()
def quantize(model: nn.Module, mode: QuantMode) -> nn.Module:
    """Replace every :class:`ExpertLinear` of ``model`` in place by its ``mode`` version; returns ``model``.

    ``none`` leaves the model untouched. Modules are converted one at a time, so the peak
    extra host memory is one linear in fp32.
    """
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; expected one of {QUANT_MODES}")
    if mode == "none":
        return model
    if mode == "fp8" and any(p.device.type != "meta" for p in model.parameters()):
        check_fp8_supported()  # a meta model (the memory planner's) is never run: its codes are only counted
    quantizer = _QUANTIZERS[mode]
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, ExpertLinear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, quantizer.from_linear(module))
    return model


def linear_bytes(model: nn.Module) -> int:
    """Bytes held by the transformer linears (plain or quantized) of ``model``."""
    total = 0
    for module in model.modules():
        if isinstance(module, ExpertLinear):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, QuantizedExpertLinear):
            total += sum(b.numel() * b.element_size() for b in (module.qweight, module.scale))
    return total
