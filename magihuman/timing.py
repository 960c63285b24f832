"""Stage and step timing that is honest on both CPU and GPU.

On CUDA, each interval is bracketed by CUDA events and read after a synchronize, so a
stage is charged for the kernels it launched, not for the Python that queued them. On CPU,
``perf_counter``. Peak memory (:class:`PeakMemory`): CUDA max allocated, or the process's peak
RSS since the last reset (Linux), so each sweep point reports its own.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch


class _Interval:
    def __init__(self, cuda: bool):
        self.cuda = cuda
        if cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self.start_event.record()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end_event.record()
        self.t1 = time.perf_counter()

    def seconds(self) -> float:
        if self.cuda:
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event) / 1000.0
        return self.t1 - self.t0


@dataclass
class StageTimer:
    """Collects named stage times and per-step times; stages may repeat (times add up)."""

    cuda: bool = field(default_factory=torch.cuda.is_available)
    _stages: list[tuple[str, _Interval]] = field(default_factory=list)
    _steps: list[tuple[str, _Interval]] = field(default_factory=list)

    def stage(self, name: str):
        """Context manager timing stage ``name``."""
        return self._measure(self._stages, name)

    def step(self, stage: str):
        """Context manager timing one denoise step inside ``stage`` (e.g. ``base_denoise``)."""
        return self._measure(self._steps, stage)

    @contextmanager
    def _measure(self, into: list[tuple[str, _Interval]], name: str) -> Iterator[None]:
        interval = _Interval(self.cuda)
        interval.start()
        try:
            yield
        finally:
            interval.stop()
            into.append((name, interval))

    def stages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, interval in self._stages:
            out[name] = out.get(name, 0.0) + interval.seconds()
        return out

    def steps(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name, interval in self._steps:
            out.setdefault(name, []).append(interval.seconds())
        return out


_CLEAR_REFS = Path("/proc/self/clear_refs")  # Linux: writing "5" resets VmHWM (the peak RSS) to the current RSS
_STATUS = Path("/proc/self/status")


class PeakMemory:
    """The one peak-memory meter: peak bytes on ``device`` over a window opened by :meth:`reset`.

    CUDA: max allocated on the device. CPU: the process's peak RSS since the reset (Linux
    ``VmHWM``, so a small run after a large one reports its own peak; elsewhere the all-time
    ``ru_maxrss``).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:  # not Linux, or not permitted: read() falls back to ru_maxrss
            pass

    def read(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            return int(re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text()).group(1)) * 1024
        except (OSError, AttributeError):
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
