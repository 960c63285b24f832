"""Which machine a timing came from, and how fast that machine was while it ran.

A stored time means nothing without its machine: the same code takes 49 ms on one
2-core EPYC VM and 74 ms on another of a different generation. Every benchmark JSON and
every results store therefore records

- a ``Fingerprint``: what changes timings besides the code (CPU model and SIMD flags,
  GPU and driver, torch / CUDA versions, thread count). Two timings are comparable in
  seconds only when their fingerprints are equal;
- a ``Calibration``: the TFLOP/s of one fixed-size matmul (bf16 on a GPU, fp32 on a CPU)
  measured in the same run. Timings from different fingerprints are compared only after
  multiplying each by its own calibration ("normalised"), and labelled as such.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # imported where measured: reading a stored record needs no torch
    import torch

# CPU flags that decide which kernels run (vector and matrix ISA); the rest
# (virtualisation, security mitigations) do not change a matmul's speed.
_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "vnni", "adx", "sha")


@dataclass(frozen=True)
class Fingerprint:
    """What a timing depends on besides the code; equal fingerprints = comparable seconds."""

    cpu: str  # model name with vendor / family / model / stepping (VMs often say just "AMD EPYC")
    cpu_flags: tuple[str, ...]  # the vector / matrix ISA flags, sorted
    logical_cpus: int
    threads: int  # torch intra-op threads
    gpu: str | None
    gpu_driver: str | None
    torch: str
    cuda: str | None

    @property
    def id(self) -> str:
        """Short stable hash of every field."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        gpu = f"{self.gpu} (driver {self.gpu_driver}, CUDA {self.cuda})" if self.gpu else "no GPU"
        return f"{self.cpu}, {self.logical_cpus} logical CPUs, {gpu}, torch {self.torch}, {self.threads} thread(s)"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_flags": list(self.cpu_flags), "id": self.id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"fingerprint is missing {missing}; got keys {sorted(data)}")
        kwargs = {f.name: data[f.name] for f in fields(cls)}
        return cls(**{**kwargs, "cpu_flags": tuple(kwargs["cpu_flags"])})


def differences(a: Fingerprint, b: Fingerprint) -> list[str]:
    """``field: a -> b`` for every field that differs (flags as added / removed sets)."""
    out = []
    for f in fields(Fingerprint):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va == vb:
            continue
        if f.name == "cpu_flags":
            gone, new = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
            out.append(f"cpu_flags: -{gone} +{new}")
        else:
            out.append(f"{f.name}: {va} -> {vb}")
    return out


def _cpuinfo() -> dict[str, str]:
    """First processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _cpu_name(info: dict[str, str]) -> str:
    name = info.get("model name") or platform.processor() or platform.machine()
    ids = [f"{k.removeprefix('cpu ')} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info]
    vendor = info.get("vendor_id")
    detail = " ".join(([vendor] if vendor else []) + ids)
    return f"{name} ({detail})" if detail else name


def _gpu_driver() -> str | None:
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 ..."
    tokens = [t for t in first.split() if t[:1].isdigit() and "." in t]
    return tokens[0] if tokens else first


def fingerprint(device: str | torch.device = "cpu") -> Fingerprint:
    """The fingerprint of this process on ``device`` (a CUDA device adds its name and driver)."""
    import torch

    device = torch.device(device)
    info = _cpuinfo()
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(_ISA_PREFIXES))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return Fingerprint(
        cpu=_cpu_name(info),
        cpu_flags=tuple(flags),
        logical_cpus=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        gpu=gpu,
        gpu_driver=_gpu_driver() if gpu else None,
        torch=torch.__version__,
        cuda=torch.version.cuda,
    )


@dataclass(frozen=True)
class Calibration:
    """TFLOP/s of a ``size``^3 matmul in ``dtype`` on ``device``: median of ``repeats`` timed by ``timer``."""

    tflops: float
    size: int
    dtype: str
    device: str
    timer: str
    repeats: int

    def describe(self) -> str:
        return f"{self.tflops:.4g} TFLOP/s ({self.dtype} matmul {self.size}^3 on {self.device}, {self.timer})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"calibration is missing {missing}; got keys {sorted(data)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


# Sizes: ~2 GFLOP per CPU matmul (tens of ms on one core), ~1.1 TFLOP per GPU matmul
# (about a millisecond on an H100): long enough to time, short enough to repeat.
CPU_SIZE, GPU_SIZE = 1024, 8192


def calibrate(
    device: str | torch.device = "cpu", timer: Callable[[], float] = time.perf_counter, repeats: int = 9
) -> Calibration:
    """Time a fixed matmul on ``device``: fp32 ``1024^3`` on a CPU, bf16 ``8192^3`` on a GPU.

    ``timer`` should be the one the benchmarks used (CPU time or wall clock), so that
    normalising by this figure cancels what slowed both. On CUDA the matmuls are timed
    by CUDA events and ``timer`` is not used.
    """
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    size, dtype = (GPU_SIZE, torch.bfloat16) if cuda else (CPU_SIZE, torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    seconds = []
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: kernel selection, allocator
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.mm(a, b)
                end.record()
                end.synchronize()
                seconds.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = timer()
                torch.mm(a, b)
                seconds.append(timer() - t0)
    median = statistics.median(seconds)
    return Calibration(
        tflops=2 * size**3 / median / 1e12,
        size=size,
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        timer="cuda events" if cuda else _timer_name(timer),
        repeats=repeats,
    )


def _timer_name(timer: Callable[[], float]) -> str:
    module = getattr(timer, "__module__", None)
    name = getattr(timer, "__qualname__", None) or getattr(timer, "__name__", repr(timer))
    return f"{module}.{name}" if module else name


def machine_record(device: str | torch.device = "cpu", timer: Callable[[], float] = time.perf_counter) -> dict:
    """``{"fingerprint": ..., "calibration": ...}`` as stored beside results."""
    return {"fingerprint": fingerprint(device).to_json(), "calibration": calibrate(device, timer).to_json()}
