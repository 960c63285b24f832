"""``magihuman-bench compare`` flags a planted +15% slowdown, clears a self-comparison, and says
"inconclusive" when the data cannot tell.

Each test builds its own git repository (a copy of this checkout's package and the DiT-forward
benchmarks, so CI needs no history) and runs the real compare on it: fresh processes per side,
the working tree's suite for both. The planted change is a commit that runs the tiny DiT's last
transformer layer twice and discards the second result: seven layers of work instead of six,
the output unchanged (about +15% of a forward).

In CI: the instruction-count flag (exact, a minute under valgrind; skipped without valgrind) and
the inconclusive verdict on a budget too small for an interval. The timed flag and the two
self-comparisons take minutes each (``slow``); docs/performance.md gives what they measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from magihuman.harness import bench
from magihuman.harness.regression import EXIT_INCONCLUSIVE, EXIT_SLOWER

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "test_dit_forward_pr"

PLANT = '''

# Planted by tests/harness/test_bench.py: one extra transformer layer. The last layer runs
# twice and its second result is discarded: 7 layers of work instead of 6, the output unchanged.
_unplanted_layer_forward = TransformerLayer.forward
_unplanted_init = DiT.__init__


def _forward_maybe_twice(self, x, *args, **kwargs):
    out = _unplanted_layer_forward(self, x, *args, **kwargs)
    if getattr(self, "planted_twice", False):
        _unplanted_layer_forward(self, x, *args, **kwargs)
    return out


def _init_with_planted_layer(self, config):
    _unplanted_init(self, config)
    self.block.layers[-1].planted_twice = True


TransformerLayer.forward = _forward_maybe_twice
DiT.__init__ = _init_with_planted_layer
'''

needs_valgrind = pytest.mark.skipif(bench.instructions_available() is not None,
                                    reason=str(bench.instructions_available()))  # fmt: skip


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench-test", "-c", "user.email=bench@test", "-C", str(repo), *args],
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path) -> Path:
    """A one-commit repository: this checkout's package and the DiT-forward benchmarks."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "magihuman", repo / "magihuman", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "benchmarks").mkdir()
    for name in ("conftest.py", "test_dit_forward.py"):
        shutil.copy(ROOT / "benchmarks" / name, repo / "benchmarks")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    return repo


@pytest.fixture
def planted(repo) -> Path:
    dit = repo / "magihuman" / "model" / "dit.py"
    dit.write_text(dit.read_text() + PLANT)
    _git(repo, "commit", "-qam", "slow: one extra transformer layer")
    return repo


def compare(repo: Path, base: str, out: Path, monkeypatch, *options: str) -> tuple[int, dict, dict]:
    """``magihuman-bench compare BASE`` (head: the working tree) on the tiny forward: exit code, its row, the report."""
    monkeypatch.chdir(repo)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["compare", base, "-k", BENCHMARK, "--json", str(out), *options])
    assert exit_.value.code != 2, "exit 2: a side could not be run (see stderr)"
    report = json.loads(out.read_text())
    (row,) = [b for b in report["benchmarks"] if b["name"] == BENCHMARK]
    return exit_.value.code, row, report


@pytest.mark.slow  # ~6 min on 2 cores (torch under valgrind, 2 runs a side): run with --runslow
@needs_valgrind
def test_planted_layer_is_flagged_by_instruction_count(planted, tmp_path, monkeypatch):
    code, row, report = compare(planted, "HEAD~1", tmp_path / "planted.json", monkeypatch, "--metric", "instructions")
    assert row["verdict"] == "slower" and code == EXIT_SLOWER, row
    assert 1.08 < row["change"]["ratio"] < 1.25, row  # one layer of six, plus the layers' shared overhead
    assert report["rounds"] == 2 and report["stopped"] == "every benchmark decided"
    counts = row["base"] + row["head"]
    assert max(row["base"]) / min(row["base"]) < 1.001 and max(row["head"]) / min(row["head"]) < 1.001, counts


def test_tiny_budget_is_inconclusive(repo, tmp_path, monkeypatch, capsys):
    # One round fits the budget: no interval, so neither "slower" nor "not slower" can be claimed.
    code, row, report = compare(repo, "HEAD", tmp_path / "tiny.json", monkeypatch, "--budget", "1",
                                "--processes", "1", "--seconds", "0.2")  # fmt: skip
    assert row["verdict"] == "inconclusive" and code == EXIT_INCONCLUSIVE, row
    assert report["rounds"] == 1 and report["stopped"].startswith("the budget")
    assert "inconclusive" in capsys.readouterr().out


@pytest.mark.slow
def test_planted_layer_is_flagged_by_time(planted, tmp_path, monkeypatch):
    code, row, report = compare(planted, "HEAD~1", tmp_path / "planted.json", monkeypatch)
    assert row["verdict"] == "slower" and code == EXIT_SLOWER, row
    assert report["seconds"] < 300


@pytest.mark.slow
def test_self_comparison_is_not_slower_by_time(repo, tmp_path, monkeypatch):
    code, row, report = compare(repo, "HEAD", tmp_path / "self.json", monkeypatch)
    assert row["verdict"] == "not slower" and code == 0, row
    assert report["seconds"] < 300


@pytest.mark.slow
@needs_valgrind
def test_self_comparison_is_not_slower_by_instruction_count(repo, tmp_path, monkeypatch):
    code, row, _ = compare(repo, "HEAD", tmp_path / "self.json", monkeypatch, "--metric", "instructions")
    assert row["verdict"] == "not slower" and code == 0, row
    assert row["change"]["ratio"] == pytest.approx(1.0, abs=1e-3), row


def test_callgrind_dumps_are_read_per_body(tmp_path):
    out = tmp_path / "callgrind.out"
    (tmp_path / "callgrind.out.1").write_text("desc: Trigger: Client Request: test_a[x]\nsummary: 120\ntotals: 120\n")
    (tmp_path / "callgrind.out.2").write_text("desc: Trigger: Client Request: test_b\ntotals: 7 0\n")
    out.write_text("desc: Trigger: Program termination\ntotals: 0\n")  # the final dump: not a body
    assert bench.read_counts(out) == {"test_a[x]": 120.0, "test_b": 7.0}


def test_speed_table_json_is_read_per_stage(tmp_path):
    experiments = [{"name": "paper_256p", "stages": {"base_denoise": {"seconds": 1.6}}},
                   {"name": "paper_540p", "stages": {"base_denoise": {"seconds": 1.7}, "sr_denoise": {"seconds": 5.1}}}]  # fmt: skip
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({"experiments": experiments, "magihuman": {"fingerprint": {}}}))
    medians, machine = bench.SUITES["speed"].load(path)
    assert medians == {"paper_256p base_denoise": 1.6, "paper_540p base_denoise": 1.7, "paper_540p sr_denoise": 5.1}
    assert machine == {"fingerprint": {}}
    with pytest.raises(bench.BenchError, match="not a speed-table JSON"):
        bench.SUITES["speed"].load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "options, message",
    [
        (bench.CompareOptions(max_rounds=1), "an interval needs two"),
        (bench.CompareOptions(budget=0), "--budget > 0"),
        (bench.CompareOptions(processes=0), "--processes >= 1"),
        (bench.CompareOptions(suite="speed", keyword="tiny"), "apply to the benchmarks suite"),
        (bench.CompareOptions(suite="speed", metric="instructions"), "apply to the benchmarks suite"),
        (bench.CompareOptions(metric="cycles"), "--metric must be one of"),
        (bench.CompareOptions(suite="nope"), "expected one of"),
        (bench.CompareOptions(cpus=(999,)), "among the allowed"),
    ],
)
def test_bad_options_are_refused(repo, options, message):
    with pytest.raises(bench.BenchError, match=message):
        bench.compare("HEAD", None, options, repo=repo)


def test_unknown_base_is_refused(repo):
    with pytest.raises(bench.BenchError, match="'no-such-ref' is not a commit"):
        bench.compare("no-such-ref", None, bench.CompareOptions(), repo=repo)
