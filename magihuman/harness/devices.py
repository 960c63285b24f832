"""Peak dense bf16 throughput of the GPUs we report against, and MFU.

Values are NVIDIA's datasheet tensor-core bf16 numbers *without* 2:4 sparsity (the
datasheets print the sparse figure, twice these, with a footnote):

- H100 SXM5: 989 TFLOP/s (datasheet "1,979 teraFLOPS*" with sparsity)
- H100 PCIe: 756 TFLOP/s (1,513 sparse)
- H100 NVL: 835 TFLOP/s (1,671 sparse)
- H200 SXM: 989 TFLOP/s (1,979 sparse; same compute as H100 SXM, more and faster HBM)
- H200 NVL: 835 TFLOP/s (1,671 sparse)
- A100 (SXM4 and PCIe, 40 and 80 GB): 312 TFLOP/s (624 sparse)

Sources: NVIDIA H100 Tensor Core GPU datasheet, H200 product page / datasheet, A100
datasheet. Real kernels reach roughly 60-80% of these on large bf16 GEMMs, so MFU
near 0.6 is already good. CPUs have no entry: pass ``peak_tflops`` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePeak:
    name: str  # canonical name
    bf16_dense_tflops: float


# Lookup order matters: the first entry whose every token appears in the (lower-cased)
# torch.cuda.get_device_name() wins, so the specific variants precede the generic ones.
# Known names: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
# "NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe".
_TABLE: tuple[tuple[tuple[str, ...], DevicePeak], ...] = (
    (("h100", "pcie"), DevicePeak("H100 PCIe", 756.0)),
    (("h100", "nvl"), DevicePeak("H100 NVL", 835.0)),
    (("h100",), DevicePeak("H100 SXM", 989.0)),
    (("h200", "nvl"), DevicePeak("H200 NVL", 835.0)),
    (("h200",), DevicePeak("H200 SXM", 989.0)),
    (("a100",), DevicePeak("A100", 312.0)),
)


def lookup_peak(device_name: str) -> DevicePeak | None:
    """Peak entry for a ``torch.cuda.get_device_name()`` string; None if unknown."""
    lowered = device_name.lower()
    for tokens, peak in _TABLE:
        if all(t in lowered for t in tokens):
            return peak
    return None


def device_peak(device: str, override_tflops: float | None = None) -> DevicePeak | None:
    """Peak for a torch device string ("cuda", "cuda:1", "cpu").

    ``override_tflops`` wins (use it for CPUs, unlisted GPUs or clocked-down parts);
    otherwise CUDA devices are looked up by name and anything else has no peak.
    """
    if override_tflops is not None:
        return DevicePeak(f"override ({device})", float(override_tflops))
    if not device.startswith("cuda"):
        return None
    import torch

    return lookup_peak(torch.cuda.get_device_name(torch.device(device)))


def achieved_tflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e12


def mfu(flops: float, seconds: float, peak: DevicePeak | None) -> float | None:
    """Model FLOPs utilisation: achieved / peak (None when the peak is unknown)."""
    if peak is None or seconds <= 0:
        return None
    return achieved_tflops(flops, seconds) / peak.bf16_dense_tflops
