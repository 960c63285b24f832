"""A non-editable install (``pip install .``) runs every console script from another directory:
configs and eval ship inside the package (``magihuman.configs``, ``magihuman.eval``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {  # script: arguments that load its configs / parse its options, then exit
    "magihuman-sweep": ["--cfg", "job"],
    "magihuman-generate": ["--cfg", "job"],
    "magihuman-report": ["--help"],
    "magihuman-eval": ["--help"],
    "magihuman-plan": ["resolution=256p", "duration=1"],
    "magihuman-forward": ["--help"],
    "magihuman-serve": ["--cfg", "job"],
}


def test_installed_package_runs_from_another_directory(tmp_path):
    # A copy of the checkout, so the build leaves nothing behind in the repo.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "__pycache__", "*.egg-info", "build"))  # fmt: skip
    # A bare venv that sees this environment's dependencies (not its editable magihuman): fast, offline.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "dependencies.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
               "--no-build-isolation", str(src)]  # fmt: skip
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import magihuman, magihuman.eval, magihuman.configs; print(magihuman.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), where
    for script, args in SCRIPTS.items():
        done = subprocess.run([venv / "bin" / script, *args], cwd=elsewhere, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{script}: {done.stderr[-2000:]}"
        assert done.stdout.strip(), script
        if args == ["--cfg", "job"]:  # the Hydra apps found their configs in the installed package
            assert "_target_: magihuman.pipeline.MagiHumanPipeline.from_preset" in done.stdout, script
