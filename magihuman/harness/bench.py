"""``magihuman-bench``: did a change make the benchmarks slower, on this machine? Slower, not slower, or cannot tell.

    magihuman-bench compare origin/main                  # the pr selection, timed, <= 5 min
    magihuman-bench compare origin/main --metric instructions   # exact counts under valgrind
    magihuman-bench compare HEAD~1 HEAD --select all -k dit_forward --budget 900
    magihuman-bench compare origin/main --suite speed -- "experiments=[paper_540p]" repeats=1  # GPU
    magihuman-bench diff OLD.json --head NEW.json        # stored pytest-benchmark JSON files

``compare`` checks BASE out into a temporary git worktree (HEAD defaults to the working
tree) and measures both with the *working tree's* ``benchmarks/`` (the measurement is
fixed, only the code under test differs, as in asv; where it cannot run against a side,
that side runs its own and the report says so). Every process imports its own tree's
``magihuman`` (checked). ``--select pr`` (default) runs the benchmarks marked ``pr``: the
DiT forward, a sampler step, packing and a decode at tiny sizes; ``all`` the whole suite.

``--metric time`` (default) works in rounds. A round starts a fresh process per side
(``bench_worker.py``: the suite's bodies collected once), and per benchmark alternates
short bursts of base and head on the same pinned CPU after a discarded warm-up, so both
see the same machine load; a side's value is its median iteration. Rounds repeat until
every benchmark is decided or ``--budget`` is spent; the verdicts (``regression.py``)
come from a paired t-interval on the per-round log ratios at 99%, since the data are
looked at after every round. The default timer is the process's CPU time with one thread:
time slices taken by other processes do not count (caches, memory bandwidth and a sibling
hyperthread still do). ``--timer wall`` measures wall time.

``--metric instructions`` counts the instructions each body executes, once per run, with
valgrind's callgrind switched on around exactly that call (a small C helper using
callgrind's client requests, compiled on the fly): no noise from load, so two runs per
side decide. Instruction counts miss memory stalls, cache effects, threading and the GPU;
on a GPU, time stays the truth (docs/performance.md).

Exit codes: 0 not slower anywhere, 1 something slower, 2 bad input or a side that cannot
run, 3 nothing slower but something inconclusive.

``diff`` compares stored benchmark JSON files (one or more runs per side) by the same
rules; when their machine fingerprints differ it says so first and compares only
calibration-normalised figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from magihuman.cli.errors import cli_errors

from .machine import Calibration, Fingerprint, differences, fingerprint
from .regression import (
    CONFIDENCE,
    EXIT_INCONCLUSIVE,
    EXIT_SLOWER,
    THRESHOLD,
    Change,
    Verdict,
    normalised,
    paired_change,
    unpaired_change,
)

TIMERS = {"cpu": "time.process_time", "wall": "time.perf_counter"}
METRICS = ("time", "instructions")
SELECTIONS = {"pr": ["-m", "pr"], "all": []}  # pytest arguments; ``pr``: benchmarks/ marked pr
SEQUENTIAL_CONFIDENCE = 0.99

# Run in each benchmark process: pin it to the given CPUs, put the side's tree first on
# sys.path, import its magihuman and say which file that was, then run the module
# (``python -m``) or the script (``python path.py``).
IMPORTED = "magihuman-bench: imported "
_BOOTSTRAP = f"""
import os, runpy, sys
os.sched_setaffinity(0, [int(c) for c in sys.argv.pop(1).split(",")])
sys.path.insert(0, sys.argv.pop(1))
import magihuman
print({IMPORTED!r} + magihuman.__file__, flush=True)
sys.argv.pop(0)
if sys.argv[0].endswith(".py"):
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


class BenchError(RuntimeError):
    """A side could not be checked out or run; the message says which and why."""


# ---------------------------------------------------------------- one run of the suite


@dataclass(frozen=True)
class SuiteRun:
    """Medians (seconds) per benchmark from one process, and the machine record it wrote."""

    medians: dict[str, float]
    machine: dict[str, Any] | None


def load_benchmark_json(path: Path) -> tuple[dict[str, float], dict[str, Any] | None]:
    """``{benchmark name: median seconds}`` and the ``magihuman`` machine record of a pytest-benchmark JSON."""
    try:
        data = json.loads(Path(path).read_text())
        medians = {b["name"]: float(b["stats"]["median"]) for b in data["benchmarks"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: not a pytest-benchmark JSON file ({type(e).__name__}: {e})") from e
    return medians, data.get("magihuman")


def load_speed_json(path: Path) -> tuple[dict[str, float], dict[str, Any] | None]:
    """``{"<experiment> <stage>": median seconds}`` of a speed-table JSON, and its machine record."""
    try:
        data = json.loads(Path(path).read_text())
        medians = {f"{e['name']} {stage}": float(st["seconds"]) for e in data["experiments"]
                   for stage, st in e["stages"].items()}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: not a speed-table JSON file ({type(e).__name__}: {e})") from e
    return medians, data.get("magihuman")


@dataclass(frozen=True)
class Suite:
    """What a run executes (``path``, taken from head for both sides) and how its JSON is read."""

    name: str
    path: str  # relative to the tree: a directory of benchmarks or a script
    load: Callable[[Path], tuple[dict[str, float], dict[str, Any] | None]]

    def argv(self, out: Path, extra: Sequence[str]) -> list[str]:
        """A run of the speed table (it times itself: CUDA events on a GPU); the benchmarks suite
        runs in ``bench_worker.py`` processes instead."""
        return [self.path, f"out={out}", *extra]


SUITES = {
    "benchmarks": Suite("benchmarks", "benchmarks", load_benchmark_json),
    "speed": Suite("speed", "scripts/speed_table.py", load_speed_json),
}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a source tree and what it is."""

    name: str  # "base" / "head"
    label: str  # what the user asked for: a ref, or "working tree"
    commit: str
    tree: Path


@dataclass(frozen=True)
class Process:
    """How every benchmark process runs, the same for both sides."""

    env: dict[str, str]
    cpus: tuple[int, ...]  # pinned: which core a process lands on changes its speed by ~10% here


def _check_import(side: Side, imported: str) -> None:
    """A side's process must have imported the side's own magihuman (not an installed copy)."""
    if not imported or not Path(imported).resolve().is_relative_to(side.tree.resolve()):
        raise BenchError(f"{side.name} ({side.label}) imported magihuman from {imported or 'nowhere'}, "
                         f"expected it under {side.tree}")  # fmt: skip


def run_module(side: Side, argv: list[str], process: Process, what: str) -> str:
    """``python -m argv...`` in a fresh process in ``side``'s tree, importing its magihuman; the output."""
    cpus = ",".join(map(str, process.cpus))
    cmd = [sys.executable, "-c", _BOOTSTRAP, cpus, str(side.tree), *argv]
    proc = subprocess.run(cmd, cwd=side.tree, env=process.env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BenchError(f"{side.name} ({side.label}): {what} failed (exit {proc.returncode}):\n{output[-3000:]}")
    _check_import(side, next((ln[len(IMPORTED) :] for ln in output.splitlines() if ln.startswith(IMPORTED)), ""))
    return output


def run_suite(side: Side, suite: Suite, argv: list[str], out: Path, process: Process) -> SuiteRun:
    """Run ``suite`` of ``side`` once, in a fresh process, and read what it wrote to ``out``."""
    run_module(side, argv, process, f"the {suite.name} run")
    return SuiteRun(*suite.load(out))


# ---------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def repo_root(start: Path) -> Path:
    return Path(_git(start, "rev-parse", "--show-toplevel"))


@contextmanager
def checkout(repo: Path, ref: str, name: str, parent: Path) -> Iterator[Side]:
    """``ref`` checked out (detached) in a temporary git worktree under ``parent``; removed afterwards."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except BenchError as e:
        raise BenchError(f"{name}: {ref!r} is not a commit in {repo}") from e
    tree = parent / name
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield Side(name, ref, commit, tree)
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)


def working_tree(repo: Path) -> Side:
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    commit = _git(repo, "rev-parse", "HEAD")
    return Side("head", "working tree" + (" (with uncommitted changes)" if dirty else ""), commit, repo)


def use_suite_of(source: Path, target: Side, path: str) -> None:
    """Replace ``target``'s ``path`` (a directory or a file) by the one in ``source``, as it is on disk."""
    src, dst = source / path, target.tree / path
    if dst.is_dir():
        shutil.rmtree(dst)
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".benchmarks", "*.pyc"))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def restore_own_suite(side: Side, path: str) -> None:
    target = side.tree / path
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    _git(side.tree, "checkout", "--quiet", "HEAD", "--", path)


# ---------------------------------------------------------------- compare


@dataclass(frozen=True)
class BenchmarkChange:
    """One benchmark: the per-round medians of both sides and the change between them."""

    name: str
    base: list[float]
    head: list[float]
    change: Change
    verdict: Verdict


@dataclass
class ComparisonReport:
    """Everything ``compare`` / ``diff`` found; ``to_markdown`` prints it, ``to_json`` stores it."""

    title: str
    notes: list[str]  # said before the table: machine, timer, normalisation, suite fallback
    unit: str  # "s", "instructions" or "calibration work units" (normalised)
    threshold: float
    changes: list[BenchmarkChange]
    only_base: list[str] = field(default_factory=list)
    only_head: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slower(self) -> list[BenchmarkChange]:
        return [c for c in self.changes if c.verdict == "slower"]

    @property
    def inconclusive(self) -> list[BenchmarkChange]:
        return [c for c in self.changes if c.verdict == "inconclusive"]

    @property
    def exit_code(self) -> int:
        """1 something slower; 3 nothing slower, something inconclusive; 0 not slower everywhere."""
        return EXIT_SLOWER if self.slower else EXIT_INCONCLUSIVE if self.inconclusive else 0

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", "", *[f"- {n}" for n in self.notes], ""]
        unit = "median" if self.unit == "s" else f"median ({self.unit})"
        confidence = {c.change.confidence for c in self.changes}
        ci = f"{confidence.pop():.0%} CI" if len(confidence) == 1 else "CI"
        lines += [f"| benchmark | base {unit} | head {unit} | head / base | {ci} | detectable | verdict |",
                  "|" + "---|" * 7]  # fmt: skip
        for c in self.changes:
            interval = "–" if c.change.low is None else f"[{c.change.low:.3f}, {c.change.high:.3f}]"
            detectable = c.change.detectable()
            detectable = "–" if detectable is None else f"{detectable:.1%}"
            base, head = (_fmt_value(statistics.median(v), self.unit) for v in (c.base, c.head))
            verdict = f"**{c.verdict}**" if c.verdict != "not slower" else c.verdict
            ratio = f"{c.change.ratio:.3f}"
            lines.append(f"| {c.name} | {base} | {head} | {ratio} | {interval} | {detectable} | {verdict} |")
        lines.append("")
        for what, names in (("only in base", self.only_base), ("only in head", self.only_head)):
            if names:
                lines.append(f"Not compared, {what}: {', '.join(names)}.")
        n_slow, n_open = len(self.slower), len(self.inconclusive)
        lines.append(f"Verdict at {self.threshold:.0%}: " + (
            f"{n_slow} slower (exit {EXIT_SLOWER})." if n_slow else
            f"nothing slower, {n_open} inconclusive: the data cannot rule out a slowdown of {self.threshold:.0%} "
            f"(exit {EXIT_INCONCLUSIVE})." if n_open else "not slower anywhere (exit 0)."))  # fmt: skip
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title, "notes": self.notes, "unit": self.unit, "threshold": self.threshold,
            "benchmarks": [{"name": c.name, "base": c.base, "head": c.head, "change": asdict(c.change),
                            "detectable": c.change.detectable(), "verdict": c.verdict} for c in self.changes],
            "only_base": self.only_base, "only_head": self.only_head, "exit_code": self.exit_code, **self.extra,
        }  # fmt: skip


def _fmt_value(x: float, unit: str) -> str:
    if unit != "s":
        return f"{x:.4g}"
    return f"{x * 1e3:.4g} ms" if x < 1 else f"{x:.4g} s"


def summarise(
    base: dict[str, list[float]], head: dict[str, list[float]], paired: bool, threshold: float,
    confidence: float = CONFIDENCE,
) -> tuple[list[BenchmarkChange], list[str], list[str]]:
    """Per benchmark present on both sides: the change and its verdict; plus the names on one side only."""
    changes = []
    for name in [n for n in head if n in base]:
        b, h = base[name], head[name]
        change = paired_change(b, h, confidence) if paired else unpaired_change(b, h, confidence)
        changes.append(BenchmarkChange(name, b, h, change, change.verdict(threshold)))
    return changes, [n for n in base if n not in head], [n for n in head if n not in base]


def _collect(rounds: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """Per benchmark, its value from every round (benchmarks missing from any round are dropped)."""
    names = [n for n in rounds[0] if all(n in r for r in rounds)]
    return {n: [r[n] for r in rounds] for n in names}


def _this_machine(threads: int, gpu: bool) -> Fingerprint:
    """This process's fingerprint with the runs' thread count (runs on old commits record none)."""
    import torch

    return replace(fingerprint("cuda" if gpu and torch.cuda.is_available() else "cpu"), threads=threads)


def _machine_notes(records: dict[str, list[dict[str, Any] | None]], threads: int, gpu: bool) -> list[str]:
    """What the runs' machine records (the speed table writes them) say, else this process's fingerprint."""
    notes = []
    prints = {m["fingerprint"]["id"]: m["fingerprint"] for ms in records.values() for m in ms if m}
    if len(prints) <= 1:
        fp = Fingerprint.from_json(next(iter(prints.values()))) if prints else _this_machine(threads, gpu)
        notes.append(f"machine: {fp.describe()} (fingerprint {fp.id}); both sides ran here")
    elif prints:
        notes.append(f"WARNING: the runs report different machine fingerprints {sorted(prints)}; "
                     "was the environment changed during the comparison?")  # fmt: skip
    calib = {}
    for side, ms in records.items():
        figures = [m["calibration"]["tflops"] for m in ms if m]
        if figures:
            calib[side] = statistics.median(figures)
    if calib:
        notes.append("calibration matmul (median over rounds, a load indicator): "
                     + ", ".join(f"{s} {v * 1e3:.4g} GFLOP/s" for s, v in calib.items()))  # fmt: skip
    return notes


@dataclass(frozen=True)
class CompareOptions:
    """How ``compare`` runs the suite; the same for both sides."""

    suite: str = "benchmarks"  # a key of SUITES
    metric: str = "time"  # a key of METRICS (benchmarks suite)
    select: str = "pr"  # a key of SELECTIONS (benchmarks suite)
    keyword: str | None = None  # pytest -k (benchmarks suite), within the selection
    extra: tuple[str, ...] = ()  # more arguments for every run (pytest, or the speed table)
    budget: float = 300.0  # seconds: no new round starts that would end after it
    max_rounds: int = 40
    threshold: float = THRESHOLD
    threads: int = 1
    timer: str = "cpu"  # a key of TIMERS (time metric; the speed table times itself)
    processes: int = 2  # fresh worker processes per side and round (time metric)
    seconds: float = 1.0  # timed seconds per benchmark, side and round, over its processes (time metric)
    burst: float = 0.05  # seconds of one burst; bursts of base and head alternate (time metric)
    cpus: tuple[int, ...] | None = None  # default: the last ``threads`` allowed CPUs

    def check(self) -> None:
        if self.suite not in SUITES:
            raise BenchError(f"--suite {self.suite!r}: expected one of {sorted(SUITES)}")
        if self.metric not in METRICS or self.select not in SELECTIONS:
            raise BenchError(f"--metric must be one of {list(METRICS)} and --select one of {list(SELECTIONS)}, "
                             f"got {self.metric!r} and {self.select!r}")  # fmt: skip
        if not (self.budget > 0 and self.max_rounds >= 2 and self.processes >= 1 and 0 < self.burst <= self.seconds):
            raise BenchError(f"need --budget > 0, --max-rounds >= 2 (an interval needs two), --processes >= 1 and "
                             f"0 < --burst <= --seconds; got {self.budget}, {self.max_rounds}, {self.processes}, "
                             f"{self.burst}, {self.seconds}")  # fmt: skip
        if self.threads < 1 or self.timer not in TIMERS:
            raise BenchError(f"--threads must be >= 1 and --timer one of {sorted(TIMERS)}")
        if self.suite != "benchmarks" and (self.keyword or self.metric != "time"):
            raise BenchError("-k and --metric instructions apply to the benchmarks suite; for the speed table "
                             "pass its own options after --")  # fmt: skip


# A side's values of one round: {benchmark name: median seconds, or instructions}.
RoundValues = dict[str, float]


class Worker:
    """A fresh process of ``bench_worker.py`` in a side's tree, timing its bodies on request."""

    def __init__(self, side: Side, argv: list[str], process: Process, log: Path):
        allowed = ",".join(map(str, sorted(os.sched_getaffinity(0))))  # collection runs on any CPU
        self.side, self.stderr = side, log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, allowed, str(side.tree), *argv],
                                     cwd=side.tree, env=process.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)  # fmt: skip
        self.log = log

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text()[-3000:]
            raise BenchError(f"{self.side.name} ({self.side.label}): the benchmark process failed "
                             f"(exit {self.proc.returncode}):\n{tail}")  # fmt: skip
        return line

    def ready(self) -> list[str]:
        imported = self._read().strip().removeprefix(IMPORTED)
        _check_import(self.side, imported)
        return json.loads(self._read())["ready"]

    def time(self, name: str, iterations: int) -> list[float]:
        self.proc.stdin.write(json.dumps({"name": name, "iterations": iterations}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read())["seconds"]

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def time_round(workers: dict[str, list[Worker]], names: list[str], first: str, o: "CompareOptions"
               ) -> list[dict[str, RoundValues]]:  # fmt: skip
    """Per benchmark: one warm-up burst per process (discarded), then bursts of about ``o.burst``
    seconds passing over the processes base1, head1, base2, head2, ... (``first`` leads), the
    sides swapped within each pair every other pass (head1, base1, ...; with one pair plain
    ABAB): each side goes first equally often and no process runs twice in a row (it would
    find its own data in the caches),
    until each side has ``o.seconds``. A process's value is its median iteration; the k-th
    processes of the two sides form the k-th pair, one sample."""
    second = "head" if first == "base" else "base"
    order = [w for pair in zip(workers[first], workers[second]) for w in pair]
    swapped = [w for pair in zip(workers[second], workers[first]) for w in pair] if len(order) > 2 else order
    values: dict[str, list[RoundValues]] = {side: [{} for _ in ws] for side, ws in workers.items()}
    for name in names:
        warm = max(1e-6, min(statistics.median(w.time(name, 1)) for w in order))
        iterations = max(1, round(o.burst / warm))
        passes = max(2, round(o.seconds / len(workers[first]) / (iterations * warm)))
        times: dict[Worker, list[float]] = {w: [] for w in order}
        for j in range(passes):
            for w in order if j % 2 == 0 else swapped:
                times[w] += w.time(name, iterations)
        for side, ws in workers.items():
            for k, w in enumerate(ws):
                values[side][k][name] = statistics.median(times[w])
    return [{"base": values["base"][k], "head": values["head"][k]} for k in range(len(order) // 2)]


COUNT_LIB_SOURCE = r"""
/* magihuman-bench --metric instructions: count exactly one call of a benchmark body. */
#include <valgrind/callgrind.h>
void magihuman_count(void (*body)(void), const char *name) {
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_TOGGLE_COLLECT;
    body();
    CALLGRIND_TOGGLE_COLLECT;
    CALLGRIND_DUMP_STATS_AT(name);
    CALLGRIND_STOP_INSTRUMENTATION;
}
"""


def instructions_available() -> str | None:
    """None if ``--metric instructions`` can run here, else why not."""
    missing = [tool for tool in ("valgrind", "cc") if shutil.which(tool) is None]
    return f"--metric instructions needs {' and '.join(missing)} on PATH" if missing else None


def build_count_lib(directory: Path) -> Path:
    """Compile the body-counting helper (valgrind's callgrind.h client requests) into ``directory``."""
    if why := instructions_available():
        raise BenchError(why)
    source, lib = directory / "magihuman_count.c", directory / "magihuman_count.so"
    source.write_text(COUNT_LIB_SOURCE)
    cmd = ["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"--metric instructions: could not build the callgrind helper (is valgrind's "
                         f"valgrind/callgrind.h installed?): {proc.stderr.strip()[-500:]}")  # fmt: skip
    return lib


def read_counts(out: Path) -> RoundValues:
    """``{body name: instructions}`` from callgrind's client-request dumps ``out.1``, ``out.2``, ..."""
    counts: RoundValues = {}
    for dump in sorted(out.parent.glob(out.name + ".*")):
        name = None
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                name = line.removeprefix("desc: Trigger: Client Request: ")
            elif line.startswith("totals: ") and name is not None:
                counts[name] = float(line.split()[1])
    return counts


def instruction_round(sides: dict[str, Side], worker_argv: list[str], process: Process, tmp: Path, i: int,
                      parallel: bool) -> dict[str, RoundValues]:  # fmt: skip
    """One run per side under callgrind, both at once when two CPUs are free (counts do not
    depend on load); each counts every selected body once, after its warm-up call."""
    procs = {}
    for name, side in sides.items():
        out = tmp / f"{name}_{i}" / "callgrind.out"
        out.parent.mkdir()
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
               f"--callgrind-out-file={out}", sys.executable, "-c", _BOOTSTRAP,
               ",".join(map(str, process.cpus)), str(side.tree), *worker_argv]  # fmt: skip
        log = (out.parent / "output.txt").open("w")
        procs[name] = (subprocess.Popen(cmd, cwd=side.tree, env=process.env, stdout=log, stderr=subprocess.STDOUT),
                       out, log)  # fmt: skip
        if not parallel:
            procs[name][0].wait()
    values = {}
    for name, (proc, out, log) in procs.items():
        proc.wait()
        log.close()
        text = (out.parent / "output.txt").read_text()
        if proc.returncode != 0:
            raise BenchError(f"{name} ({sides[name].label}): the callgrind run failed (exit {proc.returncode}):\n"
                             + text[-3000:])  # fmt: skip
        imported = next((ln[len(IMPORTED) :] for ln in text.splitlines() if ln.startswith(IMPORTED)), "")
        _check_import(sides[name], imported)
        values[name] = read_counts(out)
    return values


def compare(base_ref: str, head_ref: str | None, options: CompareOptions, repo: Path | None = None,
            log=print) -> ComparisonReport:  # fmt: skip
    """Run ``base_ref`` and ``head_ref`` (None: the working tree) side by side in rounds until
    every benchmark is decided (slower or not slower) or the budget is spent."""
    o = options
    o.check()
    clock = time.monotonic()
    suite = SUITES[o.suite]
    allowed = sorted(os.sched_getaffinity(0))
    cpus = o.cpus or tuple(allowed[-o.threads :])
    if not set(cpus) <= set(allowed) or len(cpus) < o.threads:
        raise BenchError(f"--cpus {list(cpus)}: need {o.threads} CPU(s) (one per thread) among the allowed {allowed}")
    repo = repo_root(repo or Path.cwd())
    counting = o.suite == "benchmarks" and o.metric == "instructions"
    env = {**os.environ, "OMP_NUM_THREADS": str(o.threads), "MKL_NUM_THREADS": str(o.threads), "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)  # each side's tree is put first on sys.path by _BOOTSTRAP
    process = Process(env, cpus)
    # Counting is exact and load-independent: one more look at 95% is enough. Timing looks
    # after every round, so each look uses 99% (about Pocock's bound for ~10 looks at 5% overall).
    confidence = CONFIDENCE if counting else SEQUENTIAL_CONFIDENCE
    notes: list[str] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="magihuman-bench-")))
        base = stack.enter_context(checkout(repo, base_ref, "base", tmp))
        head = stack.enter_context(checkout(repo, head_ref, "head", tmp)) if head_ref else working_tree(repo)
        sides = {"base": base, "head": head}
        if not (repo / suite.path).exists():
            raise BenchError(f"the working tree {repo} has no {suite.path}")
        for side in sides.values():
            if side.tree != repo:
                use_suite_of(repo, side, suite.path)
        worker = [str(Path(__file__).with_name("bench_worker.py")), "--metric", o.metric]
        pytest_args = ["--", suite.path, *SELECTIONS[o.select], *(["-k", o.keyword] if o.keyword else []), *o.extra]
        if counting:
            worker += ["--count-lib", str(build_count_lib(tmp)), *pytest_args]
        else:
            worker += ["--timer", TIMERS[o.timer].split(".")[1], "--cpus", ",".join(map(str, cpus)), *pytest_args]

        def fall_back(name: str, error: BenchError) -> None:
            """The working tree's suite does not run against ``name``'s code: use its own."""
            if sides[name].tree == repo:
                raise error
            restore_own_suite(sides[name], suite.path)
            notes.append(f"{name} ran its own {suite.path}, the working tree's does not run against it: "
                         f"{str(error).strip().splitlines()[-1][:200]}")  # fmt: skip

        def one_round(i: int) -> list[dict[str, RoundValues]]:
            """The samples of round ``i``: one pair {"base": values, "head": values} per process pair."""
            first = "base" if i % 2 == 0 else "head"
            if counting:
                try:
                    return [instruction_round(sides, worker, process, tmp, i, parallel=len(allowed) >= 2)]
                except BenchError as e:
                    if i > 0 or not (broken := [n for n, s in sides.items() if s.tree != repo]):
                        raise
                    for name in broken:
                        fall_back(name, e)
                    shutil.rmtree(tmp / f"base_{i}", ignore_errors=True)
                    shutil.rmtree(tmp / f"head_{i}", ignore_errors=True)
                    return [instruction_round(sides, worker, process, tmp, i, parallel=len(allowed) >= 2)]
            if o.suite == "speed":
                values = {}
                for name in (first, "head" if first == "base" else "base"):
                    out = tmp / f"{name}_{i}.json"
                    argv = suite.argv(out, o.extra)
                    try:
                        run = run_suite(sides[name], suite, argv, out, process)
                    except BenchError as e:
                        if i > 0:
                            raise
                        fall_back(name, e)
                        run = run_suite(sides[name], suite, argv, out, process)
                    machines[name].append(run.machine)
                    values[name] = run.medians
                return [values]
            workers: dict[str, list[Worker]] = {"base": [], "head": []}
            try:
                names: dict[str, list[str]] = {}
                for k in range(o.processes):  # the side that leads also starts first (it alternates)
                    for name in (first, "head" if first == "base" else "base"):
                        workers[name].append(Worker(sides[name], worker, process, tmp / f"{name}_{i}_{k}.log"))
                for name in sides:
                    try:
                        names[name] = [w.ready() for w in workers[name]][0]
                    except BenchError as e:
                        if i > 0:
                            raise
                        for w in workers[name]:
                            w.close()
                        fall_back(name, e)
                        workers[name] = [Worker(sides[name], worker, process, tmp / f"{name}_{i}_{k}_own.log")
                                         for k in range(o.processes)]  # fmt: skip
                        names[name] = [w.ready() for w in workers[name]][0]
                listed.update(names)
                return time_round(workers, [n for n in names["head"] if n in names["base"]], first, o)
            finally:
                for w in workers["base"] + workers["head"]:
                    w.close()

        machines: dict[str, list[dict[str, Any] | None]] = {"base": [], "head": []}
        listed: dict[str, list[str]] = {}  # time metric: the bodies each side's worker collected
        rounds: dict[str, list[RoundValues]] = {"base": [], "head": []}
        stopped = f"the budget of {o.budget:g} s"
        for i in range(o.max_rounds):
            start = time.monotonic()
            for pair in one_round(i):
                for name in sides:
                    rounds[name].append(pair[name])
            changes, _, _ = summarise(_collect(rounds["base"]), _collect(rounds["head"]), not counting, o.threshold,
                                      confidence)  # fmt: skip
            log(f"[bench] round {i + 1}, {len(rounds['base'])} samples ({time.monotonic() - clock:.0f} s): "
                + "; ".join(f"{c.name} {c.change.ratio:.3f} {c.verdict}" for c in changes))  # fmt: skip
            if len(rounds["base"]) >= 2 and all(c.verdict != "inconclusive" for c in changes):
                stopped = "every benchmark decided"
                break
            # Counting always takes its second run a side: exact counts decide with two.
            if i + 1 >= (2 if counting else 1) and time.monotonic() - clock + (time.monotonic() - start) > o.budget:
                break
        else:
            stopped = f"--max-rounds {o.max_rounds}"
    seconds = time.monotonic() - clock
    base_values, head_values = _collect(rounds["base"]), _collect(rounds["head"])
    changes, only_base, only_head = summarise(base_values, head_values, not counting, o.threshold, confidence)
    if listed:
        only_base += [n for n in listed["base"] if n not in listed["head"]]
        only_head += [n for n in listed["head"] if n not in listed["base"]]
    n, n_rounds = len(rounds["base"]), i + 1
    if counting:
        how = (f"instructions executed by one call of each body after its warm-up call, counted by valgrind's "
               f"callgrind around exactly that call; {n} run(s) per side under valgrind, "
               f"{'both sides at once' if len(allowed) >= 2 else 'one at a time'}; head / base = ratio of geometric "
               "means, "
               f"{confidence:.0%} CI from Welch's t-test on log counts")  # fmt: skip
    elif o.suite == "speed":
        how = (f"{n} rounds alternating AB, BA, ... of the speed table (its own timer), each run a fresh process; "
               f"head / base = geometric mean of the per-round ratios, {confidence:.0%} CI from a paired t-test "
               "on log times, looked at after every round")  # fmt: skip
    else:
        how = (f"{n_rounds} rounds, each {o.processes} fresh process(es) per side pinned to CPU(s) "
               f"{','.join(map(str, cpus))} with {o.threads} thread(s); per benchmark a warm-up burst per process "
               f"(discarded), then bursts of ~{o.burst * 1e3:g} ms alternating base/head until each side has "
               f"{o.seconds:g} s; timer {TIMERS[o.timer]} ({'CPU time' if o.timer == 'cpu' else 'wall clock'}); a "
               f"a process's value = its median iteration; {n} samples = pairs of processes (k-th base, k-th head "
               f"of a round); head / base = geometric mean of the pair ratios, {confidence:.0%} CI from a paired "
               "t-test on log times, looked at after every round")  # fmt: skip
    selection = f"selection {o.select}" + (f", -k {o.keyword}" if o.keyword else "") if o.suite == "benchmarks" else ""
    notes = [
        f"base {base.label} = {base.commit[:10]}, head {head.label} = {head.commit[:10]}",
        *_machine_notes(machines, o.threads, gpu=o.suite == "speed"),
        f"suite {o.suite}" + (f", {selection}" if selection else "") + f"; metric {o.metric if counting else 'time'}",
        how,
        f"stopped after {n_rounds} rounds, {seconds:.0f} s: {stopped}",
        *notes,
    ]
    title = f"magihuman-bench compare {base_ref} {head_ref or '(working tree)'}"
    extra = {"base_commit": base.commit, "head_commit": head.commit, "options": asdict(o), "cpus": list(cpus),
             "rounds": n_rounds, "samples": n, "seconds": seconds, "stopped": stopped, "machines": machines}  # fmt: skip
    unit = "instructions" if counting else "s"
    return ComparisonReport(title, notes, unit, o.threshold, changes, only_base, only_head, extra)


# ---------------------------------------------------------------- diff of stored runs


def _machine(path: Path, record: dict[str, Any] | None) -> tuple[Fingerprint, Calibration]:
    if not record:
        raise BenchError(f"{path} records no machine fingerprint (saved before fingerprints existed): which "
                         "machine its times come from is unknown, so they are not compared; re-record it")  # fmt: skip
    return Fingerprint.from_json(record["fingerprint"]), Calibration.from_json(record["calibration"])


def diff(base_paths: Sequence[Path], head_paths: Sequence[Path], threshold: float = THRESHOLD) -> ComparisonReport:
    """Stored runs (pytest-benchmark JSON with a machine record) of base vs head, unpaired."""
    sides: dict[str, dict[str, list[float]]] = {}
    machines: dict[str, list[tuple[Fingerprint, Calibration]]] = {}
    for name, paths in (("base", base_paths), ("head", head_paths)):
        if not paths:
            raise BenchError(f"no {name} files given")
        runs = []
        for p in paths:
            medians, record = load_benchmark_json(p)
            runs.append((medians, _machine(p, record)))
        machines[name] = [m for _, m in runs]
        sides[name] = {n: [r[0][n] for r in runs] for n in runs[0][0] if all(n in r[0] for r in runs)}
    prints = {fp.id: fp for ms in machines.values() for fp, _ in ms}
    notes = [f"base: {', '.join(map(str, base_paths))}; head: {', '.join(map(str, head_paths))}"]
    timers = {c.timer for ms in machines.values() for _, c in ms}
    if len(timers) > 1:
        notes.append(f"WARNING: the runs used different timers {sorted(timers)}; their times measure different things")
    if len(prints) == 1:
        notes.append(f"same machine fingerprint {next(iter(prints))}: {next(iter(prints.values())).describe()}; "
                     "times compared in seconds")  # fmt: skip
        unit = "s"
    else:
        (fb, _), (fh, _) = machines["base"][0], machines["head"][-1]
        notes.append("DIFFERENT MACHINES: seconds are not comparable, so every time is multiplied by its own "
                     "run's calibration TFLOP/s (normalised: calibration work units, lower is faster). Differences: "
                     + "; ".join(differences(fb, fh) or ["fingerprints differ within a side"]))  # fmt: skip
        for name, ms in machines.items():
            notes.append(f"{name} calibration: " + ", ".join(c.describe() for _, c in ms))
        unit = "calibration work units"
        for name, ms in machines.items():
            tflops = [c.tflops for _, c in ms]
            sides[name] = {n: [normalised(t, c) for t, c in zip(ts, tflops)] for n, ts in sides[name].items()}
    notes.append("head / base = ratio of geometric means over the runs; 95% CI from Welch's t-test on log times "
                 "(needs at least 2 runs per side)")  # fmt: skip
    changes, only_base, only_head = summarise(sides["base"], sides["head"], False, threshold)
    return ComparisonReport("magihuman-bench diff", notes, unit, threshold, changes, only_base, only_head)


# ---------------------------------------------------------------- CLI


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from .report import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@cli_errors("magihuman-bench")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="magihuman-bench", description=__doc__.split("\n\n")[0],
                                     epilog="compare: arguments after -- go to every run (pytest / the speed table). "
                                            "Exit codes: 0 not slower, 1 slower, 2 bad input, 3 inconclusive")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run the benchmarks of two commits alternately on this machine")
    c.add_argument("base", help="git ref of the base (e.g. origin/main, HEAD~1)")
    c.add_argument("head", nargs="?", help="git ref of the head (default: the working tree, uncommitted changes too)")
    c.add_argument("--suite", choices=sorted(SUITES), default="benchmarks",
                   help="benchmarks: the pytest-benchmark suite (CPU); speed: scripts/speed_table.py's experiments x stages (GPU)")
    c.add_argument("--metric", choices=METRICS, default="time",
                   help="time: timed bursts (default); instructions: executed instructions under valgrind (exact)")
    c.add_argument("--select", choices=sorted(SELECTIONS), default="pr",
                   help="pr: the benchmarks marked pr, tiny sizes (default); all: the whole suite")
    c.add_argument("-k", dest="keyword", help="pytest -k expression, within the selection")
    c.add_argument("--budget", type=float, default=300.0,
                   help="seconds: rounds continue until every benchmark is decided or this is spent (default 300)")
    c.add_argument("--max-rounds", type=int, default=40, help="rounds at most (default 40)")
    c.add_argument("--threads", type=int, default=1, help="OMP/MKL threads for both sides (default 1)")
    c.add_argument("--timer", choices=sorted(TIMERS), default="cpu", help="cpu: process CPU time (default); wall")
    c.add_argument("--processes", type=int, default=2,
                   help="fresh processes per side and round, their bursts interleaved (default 2)")
    c.add_argument("--seconds", type=float, default=1.0,
                   help="timed seconds per benchmark, side and round (default 1)")
    c.add_argument("--burst", type=float, default=0.05,
                   help="seconds per burst; base and head bursts alternate (default 0.05)")
    c.add_argument("--cpus", type=lambda v: [int(x) for x in v.split(",")],
                   help="pin every timed run to these CPUs, e.g. 1 or 0,1 (default: the last --threads allowed)")  # fmt: skip
    d = sub.add_parser("diff", help="compare stored pytest-benchmark JSON files (one or more runs per side)")
    d.add_argument("base", type=Path, nargs="+", help="base JSON file(s)")
    d.add_argument("--head", type=Path, nargs="+", required=True, help="head JSON file(s)")
    for p in (c, d):
        p.add_argument("--threshold", type=float, default=THRESHOLD, help="smallest change that counts (default 0.10)")
        p.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(argv)
    if extra and args.command != "compare":
        parser.error(f"arguments after -- are for compare's runs, not {args.command}: {extra}")
    try:
        if args.command == "compare":
            options = CompareOptions(args.suite, args.metric, args.select, args.keyword, tuple(extra), args.budget,
                                     args.max_rounds, args.threshold, args.threads, args.timer, args.processes,
                                     args.seconds, args.burst, tuple(args.cpus or ()) or None)  # fmt: skip
            report = compare(args.base, args.head, options)
        else:
            report = diff(args.base, args.head, args.threshold)
    except BenchError as e:
        print(f"magihuman-bench: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(report.to_markdown())
    if args.json:
        _write_json(args.json, report.to_json())
    raise SystemExit(report.exit_code)


if __name__ == "__main__":
    main()
