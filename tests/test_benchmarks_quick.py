"""The benchmark suite in quick mode: every benchmark body runs once, no timing statistics.

Keeps ``benchmarks/`` from rotting under the main test command; a real (timed) run and
the regression compare are documented in docs/performance.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_once_each():
    result = subprocess.run(
        # Compiled variants cost minutes of inductor compile here; tests/test_compile.py covers their graphs.
        [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-p", "no:cacheprovider",
         "-k", "not compiled"],
        cwd=ROOT,
        # Nothing is timed in quick mode; one thread avoids OpenMP oversubscription stalls on a shared box.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
