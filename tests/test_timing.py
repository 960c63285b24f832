"""Peak memory is per run: a small allocation after a large one reports its own peak."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from magihuman.timing import PeakMemory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak RSS is reset through /proc (Linux)")
def test_cpu_peak_is_reset_between_runs():
    memory = PeakMemory("cpu")
    memory.reset()
    large = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB, touched
    large_peak = memory.read()
    del large
    memory.reset()
    small = np.ones(8 * 2**20, dtype=np.uint8)
    small_peak = memory.read()
    del small
    assert large_peak - small_peak > 300 * 2**20, (large_peak, small_peak)
