"""Console scripts: an input error is one line on stderr and exit 2; --debug shows the traceback."""

from __future__ import annotations

import hashlib
import shutil
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from magihuman.api import RequestError
from magihuman.cli import forward, generate
from magihuman.cli.errors import ConfigError, cli_errors
from magihuman.components.tiny import ensure_tiny_release
from magihuman.harness import sweep
from magihuman.model import DiT
from magihuman.model.checkpoint import save_state_dict
from magihuman.model.dit import init_weights
from magihuman.model.presets import TINY

REPO = Path(__file__).resolve().parents[1]


def run_main(main, capsys, monkeypatch, *args: str) -> tuple[int | str | None, str]:
    """A console script's ``main`` in this process, as if run with ``args``: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", [main.cli_prog, *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("MAGIHUMAN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code, capsys.readouterr().err


def one_error_line(code, err: str, prog: str) -> str:
    assert code == 2, err[-2000:]
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err[-2000:]
    return err.strip()


@cli_errors("tool")
def tool(argv: list[str]) -> int:
    if argv[:1] == ["request"]:
        raise RequestError({"duration": "must be at most 10 s; got 12"})
    if argv[:1] == ["config"]:
        raise ConfigError("unknown prompt_id 'nope'\nthe suite has ['greeting']")
    if argv[:1] == ["bug"]:
        raise ZeroDivisionError("a bug keeps its traceback")
    return len(argv)


def test_input_errors_are_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("MAGIHUMAN_DEBUG", raising=False)
    for argv, message in ((["request"], "invalid request: duration: must be at most 10 s; got 12"),
                          (["config"], "unknown prompt_id 'nope' the suite has ['greeting']")):  # fmt: skip
        with pytest.raises(SystemExit) as done:
            tool(argv)
        assert done.value.code == 2
        assert capsys.readouterr().err == f"tool: error: {message}\n"
    with pytest.raises(ZeroDivisionError):
        tool(["bug"])
    assert tool(["a", "--debug", "b"]) == 2  # the switch is taken off before the tool parses


@pytest.mark.parametrize("switch", ["--debug", "MAGIHUMAN_DEBUG", "HYDRA_FULL_ERROR"])
def test_debug_switches_show_the_traceback(monkeypatch, switch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("MAGIHUMAN_DEBUG", raising=False)
    if switch != "--debug":
        monkeypatch.setenv(switch, "1")
    with pytest.raises(RequestError):
        tool(["request", "--debug"] if switch == "--debug" else ["request"])
    assert "HYDRA_FULL_ERROR" not in os.environ or switch == "HYDRA_FULL_ERROR"  # restored after the call


def test_forward_names_a_broken_checkpoint_in_one_line(tmp_path, capsys, monkeypatch):
    """A DiT checkpoint missing a key is named before any component loads: one line, exit 2."""
    monkeypatch.chdir(tmp_path)  # Hydra's output directory
    layout = ensure_tiny_release(tmp_path / "cache")
    state = init_weights(DiT(TINY), seed=0).state_dict()
    del state["final_norm_video.weight"]
    shutil.rmtree(layout.distill)
    root = save_state_dict(state, layout.distill)
    capsys.readouterr()  # the release's progress bars
    code, err = run_main(forward.main, capsys, monkeypatch, f"model.cache_dir={tmp_path / 'cache'}", "repeats=1")
    line = one_error_line(code, err, "magihuman-forward")
    assert f"checkpoint {root} does not match" in line and "final_norm_video.weight" in line


def test_generate_unknown_prompt_id_and_bad_override(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's output directory
    line = one_error_line(*run_main(generate.main, capsys, monkeypatch, "prompt_id=nope"), "magihuman-generate")
    assert "unknown prompt_id 'nope'" in line and "greeting" in line
    line = one_error_line(*run_main(generate.main, capsys, monkeypatch, "sampler=nope"), "magihuman-generate")
    assert "sampler" in line and "nope" in line
    line = one_error_line(*run_main(generate.main, capsys, monkeypatch, "sampler.num_steps=-1"), "magihuman-generate")
    assert "num_steps must be >= 1, got -1" in line and "full_key: sampler" in line  # our config validation
    monkeypatch.setattr(sys, "argv", ["magihuman-generate", "prompt_id=nope", "--debug"])
    with pytest.raises(ConfigError, match="unknown prompt_id"):
        generate.main()


def test_sweep_refuses_a_foreign_store_before_any_point(tmp_path, capsys, monkeypatch):
    store = tmp_path / "app.db"
    with closing(sqlite3.connect(store)) as con:
        con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        con.commit()
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    code, err = run_main(sweep.main, capsys, monkeypatch, f"harness.store={store}", f"harness.artifacts={tmp_path / 'v'}",
                         f"harness.report={tmp_path / 'report'}", f"hydra.sweep.dir={tmp_path / 'hydra'}")  # fmt: skip
    line = one_error_line(code, err, "magihuman-sweep")
    assert f"{store} is not a magihuman results store: its tables (users)" in line
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no point was launched


def test_every_console_script_is_wrapped():
    import importlib
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        main = getattr(importlib.import_module(module), attr)
        assert getattr(main, "cli_prog", None) == name, f"{name} ({target}) is not wrapped by cli_errors({name!r})"



def test_report_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    from magihuman.harness.report import cli as report
    from tests.harness.synthetic import fill_store

    fill_store(tmp_path / "r.sqlite")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as done:
        report.main([str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "a_file" / "report")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err == f"magihuman-report: error: [Errno 20] Not a directory: '{tmp_path}/a_file/report'\n"
