"""``magihuman-bench compare`` fires on a planted slowdown and stays quiet on a self-comparison.

Each test builds its own git repository (a copy of this checkout's package and the
tiny-forward benchmark, so CI needs no history) and runs the real compare on it: both
sides in alternating rounds, each run a fresh process. The planted change is a commit
that adds a redundant matmul to every DiT forward (~30% of the tiny forward here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from magihuman.harness import bench

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "test_dit_forward_tiny"
MAX_TIME = 0.4  # seconds per run; ~5 s of imports dominate each run's cost anyway

PLANT = '''

# Planted by tests/harness/test_bench.py: a redundant matmul after every forward.
_unplanted_forward = DiT.forward


def _forward_with_redundant_matmul(self, packed, *args, **kwargs):
    out = _unplanted_forward(self, packed, *args, **kwargs)
    torch.mm(torch.ones(packed.x.shape[0], 1280), torch.ones(1280, 1280))
    return out


DiT.forward = _forward_with_redundant_matmul
'''


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


def compare(repo: Path, base: str, rounds: int, out: Path, monkeypatch) -> tuple[int, dict]:
    """``magihuman-bench compare BASE`` (head: the working tree) on the tiny forward: exit code, its row."""
    monkeypatch.chdir(repo)
    argv = ["compare", base, "-k", BENCHMARK, "--rounds", str(rounds),
            "--max-time", str(MAX_TIME), "--json", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code in (0, 1), "exit 2: a side could not be run (see stderr)"
    report = json.loads(out.read_text())
    (row,) = [b for b in report["benchmarks"] if b["name"] == BENCHMARK]
    return exit_.value.code, row


def test_planted_slowdown_is_flagged(repo, tmp_path, monkeypatch):
    dit = repo / "magihuman" / "model" / "dit.py"
    dit.write_text(dit.read_text() + PLANT)
    _git(repo, "commit", "-qam", "slow: redundant matmul in the forward")

    # ~+35% against +-10% noise between processes: 5 rounds put the interval's low end near 1.15
    code, row = compare(repo, "HEAD~1", 5, tmp_path / "planted.json", monkeypatch)
    assert row["verdict"] == "slower", row
    assert row["change"]["ratio"] > 1.1 and row["change"]["low"] > 1.0, row
    assert code == 1


def test_self_comparison_is_not_flagged(repo, tmp_path, monkeypatch, capsys):
    # docs/performance.md gives the false-positive rate measured on this VM under load
    code, row = compare(repo, "HEAD", 4, tmp_path / "self.json", monkeypatch)
    out = capsys.readouterr().out
    assert row["verdict"] == "no significant change", row
    assert code == 0
    assert "fingerprint" in out and "calibration matmul" in out  # every run recorded its machine


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
        (bench.CompareOptions(rounds=1), "at least 2"),
        (bench.CompareOptions(suite="speed", keyword="tiny"), "-k selects pytest benchmarks"),
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
