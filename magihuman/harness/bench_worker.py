"""One benchmark process of ``magihuman-bench compare``: collect the suite's bodies, then time or count them.

``bench.py`` runs this file *by path* (the side's own tree may predate it) in a process that
has imported one side's ``magihuman``. It runs the pytest-benchmark suite once with the
``benchmark`` fixture replaced by a recorder: each test's body (the function it hands to
``benchmark(...)`` / ``benchmark.pedantic(...)``, with its arguments) is called once, so
the test checks its output as usual and the body is warm, and is kept. Then:

- ``--metric time``: JSON lines. The worker prints ``{"ready": [names]}`` and answers each
  ``{"name": NAME, "iterations": N}`` read from stdin with ``{"seconds": [one time per
  iteration]}``, so the controller can alternate short bursts of base and head;
- ``--metric instructions``: under callgrind (started with ``--instr-atstart=no
  --collect-atstart=no``), each body runs once more inside ``magihuman_count`` of the helper
  library ``--count-lib``, which switches instrumentation and collection on around exactly
  that call and dumps the count with the body's name (``CALLGRIND_DUMP_STATS_AT``).

Only the standard library, pytest and pytest-benchmark are imported here: the code under test is the side's.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import sys
import time
from typing import Any, Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

BODIES: dict[str, Callable[[], Any]] = {}


class Recorder(BenchmarkFixture):
    """Stands in for pytest-benchmark's fixture (a subclass only because its plugin checks the
    type): keeps the body, runs it once, returns its result."""

    def __init__(self, name: str):  # noqa: the base class's timing machinery is not used
        self.name, self.group, self.extra_info = name, None, {}

    def __call__(self, function, *args, **kwargs):
        BODIES[self.name] = functools.partial(function, *args, **kwargs)
        return function(*args, **kwargs)

    def pedantic(self, target, args=(), kwargs=None, setup=None, rounds=1, warmup_rounds=0, iterations=1):
        if setup is not None:
            raise NotImplementedError(f"{self.name}: benchmark.pedantic(setup=...) is not supported by magihuman-bench")
        return self(target, *args, **(kwargs or {}))


class RecorderFixture:
    @pytest.fixture
    def benchmark(self, request):
        return Recorder(request.node.name)


class LateRegistration:
    """Registers the recorder after pytest-benchmark, so that its ``benchmark`` fixture wins."""

    def pytest_configure(self, config):
        config.pluginmanager.register(RecorderFixture(), "magihuman-bench-recorder")


def collect(pytest_args: list[str]) -> None:
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--benchmark-disable", *pytest_args],
                       plugins=[LateRegistration()])  # fmt: skip
    if code != 0:
        raise SystemExit(f"the benchmark suite failed (pytest exit {int(code)}); its output is above")
    if not BODIES:
        raise SystemExit("no benchmark body was recorded")


def serve(protocol, timer: Callable[[], float], cpus: list[int]) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    protocol.write(json.dumps({"ready": list(BODIES)}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        body, seconds = BODIES[request["name"]], []
        for _ in range(int(request["iterations"])):
            start = timer()
            body()
            seconds.append(timer() - start)
        protocol.write(json.dumps({"seconds": seconds}) + "\n")
        protocol.flush()


def count(library: str) -> None:
    counter = ctypes.CDLL(library).magihuman_count
    counter.argtypes = [ctypes.CFUNCTYPE(None), ctypes.c_char_p]
    for name, body in BODIES.items():

        def call(body=body) -> None:
            body()

        counter(ctypes.CFUNCTYPE(None)(call), name.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", choices=["time", "instructions"], required=True)
    parser.add_argument("--timer", default="process_time", choices=["process_time", "perf_counter"])
    parser.add_argument("--cpus", default="", help="time: pin the timed bursts to these CPUs (comma-separated)")
    parser.add_argument("--count-lib", help="instructions: the helper library with magihuman_count")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: the suite and its selection")
    args = parser.parse_args()
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    # The protocol keeps the original stdout; everything else written to fd 1 (pytest) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    collect(pytest_args)
    if args.metric == "time":
        serve(protocol, getattr(time, args.timer), [int(c) for c in args.cpus.split(",") if c])
    else:
        count(args.count_lib)


if __name__ == "__main__":
    main()
