"""Peak memory is per run: a small allocation after a large one reports its own peak."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from magihuman.timing import peak_memory_bytes, reset_peak_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak RSS is reset through /proc (Linux)")
def test_cpu_peak_is_reset_between_runs():
    reset_peak_memory()
    large = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB, touched
    large_peak = peak_memory_bytes()
    del large
    reset_peak_memory()
    small = np.ones(8 * 2**20, dtype=np.uint8)
    small_peak = peak_memory_bytes()
    del small
    assert large_peak - small_peak > 300 * 2**20, (large_peak, small_peak)
