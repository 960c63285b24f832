"""notebooks/compare_settings.ipynb runs top to bottom against a synthetic results store,
so it cannot rot as the store and report APIs change."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest

from tests.harness.synthetic import fill_store, grid

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "compare_settings.ipynb"


def test_compare_settings_notebook_executes(tmp_path, monkeypatch):
    records = grid(failures=1)
    fill_store(tmp_path / "results.sqlite", records)
    def halved(r):  # every timed repeat twice as fast
        return replace(r, timings={k: v / 2 for k, v in r.timings.items()}, repeat_times=[t / 2 for t in r.repeat_times])

    faster = [halved(r) if i == 0 else r for i, r in enumerate(records)]
    fill_store(tmp_path / "baseline.sqlite", [replace(r, run_id="b" + r.run_id) for r in faster])
    # the parameter cell reads these; absolute paths win over its repo-root default
    monkeypatch.setenv("MAGIHUMAN_RESULTS", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("MAGIHUMAN_BASELINE", str(tmp_path / "baseline.sqlite"))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 1 + 4  # the stage plot (by every varying setting), four metrics with values
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "48 runs, 47 ok" in text
    assert "flicker: no values" in text
    assert "RuntimeError: CUDA out of memory" in text  # failed runs table
    assert "| time | total |" in text and "| metric |" not in text  # the one point faster in the baseline
