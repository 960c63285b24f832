"""Run ``magihuman-serve`` as a child process and read the client environment it prints
(for the load benchmark and the tests; a user runs the console script)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_EXPORT = re.compile(r"^export (\w+)=(.*)$")
_READY = re.compile(r"worker (\d+) ready")


class ServerProcess:
    """``python -m magihuman.serve.cli <overrides>`` in ``cwd``; :meth:`start` returns once
    ``workers`` workers are ready, with :attr:`env` holding the printed ``FAL_*`` / ``SSL_CERT_FILE``."""

    def __init__(self, overrides: list[str], cwd: Path, workers: int = 1):
        self.overrides, self.cwd, self.workers = list(overrides), Path(cwd), workers
        self.env: dict[str, str] = {}
        self.output: list[str] = []
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 300.0) -> ServerProcess:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.process = subprocess.Popen([sys.executable, "-m", "magihuman.serve.cli", *self.overrides], cwd=self.cwd,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        ready: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(ready) < self.workers:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise TimeoutError(f"magihuman-serve not ready after {timeout:g} s:\n" + "".join(self.output)) from None
            if line is None:
                raise RuntimeError(f"magihuman-serve exited with code {self.process.wait()}:\n" + "".join(self.output))
            if match := _EXPORT.match(line.strip()):
                self.env[match[1]] = match[2]
            if match := _READY.search(line):
                ready.add(match[1])
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs (the workers die with it, by their parent-death signal)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


CLIENT_ENV = ("FAL_QUEUE_RUN_HOST", "FAL_RUN_HOST", "SSL_CERT_FILE")


def fal_client_for(env: dict[str, str]):
    """The official ``fal_client`` module pointed at a server (``env``: its printed variables).

    The client reads its hosts from the environment when imported, so it is (re)imported after
    setting them, as a fresh process would; nothing in it is changed.
    """
    import importlib

    for name in CLIENT_ENV:
        os.environ[name] = env[name]
    if "fal_client" not in sys.modules:
        return importlib.import_module("fal_client")
    importlib.reload(sys.modules["fal_client.auth"])
    importlib.reload(sys.modules["fal_client.client"])
    return importlib.reload(sys.modules["fal_client"])
