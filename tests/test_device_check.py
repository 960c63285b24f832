"""scripts/device_check.sh in its dry mode (CPU, tiny): the GPU check cannot rot between GPU sessions.

It runs the same steps as on the device machine (gpu-marked tests, which skip here; the speed
table, the paper's 540p row through pipeline.generate, twice: eager and another runtime;
publishing after each) and must leave the results JSON and a filled table in the given docs folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from magihuman.harness.speed import TABLE_END, TABLE_START

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_publishes_results_and_table(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "performance.md", docs / "performance.md")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", "scripts/device_check.sh", "--device", "cpu", "--arch", "tiny", "--out", str(docs)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    (results,) = (docs / "results").glob("cpu-*.json")
    runs = json.loads(results.read_text())["runs"]
    assert [r["runtime"]["label"] for r in runs] == ["none/sdpa", "none/flex"]
    assert all(r["complete"] for r in runs)
    for run in runs:
        (experiment,) = run["experiments"]
        assert experiment["name"] == "paper_540p" and {"base_denoise", "sr_denoise", "video_decode"} <= set(experiment["stages"])
    table = (docs / "performance.md").read_text().split(TABLE_START)[1].split(TABLE_END)[0]
    assert "| paper_540p | base_denoise | 1.6 |" in table and "| paper_540p | sr_denoise | 5.1 |" in table
    assert "none/flex s" in table and "| paper_540p | 8.0 |" in table
    assert (docs / "results" / results.name.replace(".json", "-gpu-tests.txt")).is_file()
