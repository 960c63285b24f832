"""``magihuman-bench``: did a change make the benchmarks slower, on this machine, significantly?

    magihuman-bench compare origin/main          # base = origin/main, head = the working tree
    magihuman-bench compare HEAD~1 HEAD -k dit_forward --rounds 8
    magihuman-bench compare origin/main --suite speed -- "experiments=[paper_540p]" repeats=1  # GPU
    magihuman-bench diff OLD.json --head NEW.json  # stored pytest-benchmark JSON files

``compare`` checks BASE out into a temporary git worktree and runs a suite (the
pytest-benchmark ``benchmarks/``, or the speed table's stages on a GPU) for base and head in alternating rounds (AB, BA, AB, ...), each run a fresh process of
this interpreter with the same environment and thread count, importing its own tree's
``magihuman`` (checked: the run fails if another copy was imported). Both sides run
the *working tree's* suite, as asv does (the measurement is fixed, only the code under
test differs); where it cannot run against a side (it uses an API that commit lacks),
that side runs its own and the report says so. Per benchmark it prints the ratio head / base of the per-round
medians with a 95% confidence interval and a verdict (``regression.py``), and exits 1
when any benchmark is significantly slower by more than the threshold.

On a CPU the default timer is the process's CPU time with one thread: time slices taken
by other processes on a shared machine do not count, which cuts the noise several-fold
(caches and memory bandwidth are still shared). ``--timer wall`` measures wall time.

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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .machine import Calibration, Fingerprint, differences, fingerprint
from .regression import THRESHOLD, Change, Verdict, normalised, paired_change, unpaired_change

TIMERS = {"cpu": "time.process_time", "wall": "time.perf_counter"}

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

    def argv(self, out: Path, keyword: str | None, timer: str, max_time: float, extra: Sequence[str]) -> list[str]:
        if self.name == "benchmarks":
            argv = ["pytest", self.path, "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}",
                    f"--benchmark-timer={timer}", f"--benchmark-max-time={max_time}"]  # fmt: skip
            return argv + (["-k", keyword] if keyword else []) + list(extra)
        return [self.path, f"out={out}", *extra]  # the speed table times itself (CUDA events on a GPU)


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


def run_module(side: Side, argv: list[str], process: Process, what: str) -> str:
    """``python -m argv...`` in a fresh process in ``side``'s tree, importing its magihuman; the output."""
    cpus = ",".join(map(str, process.cpus))
    cmd = [sys.executable, "-c", _BOOTSTRAP, cpus, str(side.tree), *argv]
    proc = subprocess.run(cmd, cwd=side.tree, env=process.env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BenchError(f"{side.name} ({side.label}): {what} failed (exit {proc.returncode}):\n{output[-3000:]}")
    imported = next((line[len(IMPORTED) :] for line in output.splitlines() if line.startswith(IMPORTED)), "")
    if not Path(imported).resolve().is_relative_to(side.tree.resolve()):
        raise BenchError(f"{side.name} ({side.label}) imported magihuman from {imported or 'nowhere'}, "
                         f"expected it under {side.tree}")  # fmt: skip
    return output


def run_suite(side: Side, suite: Suite, argv: list[str], out: Path, process: Process) -> SuiteRun:
    """Run ``suite`` of ``side`` once, in a fresh process, and read what it wrote to ``out``."""
    try:
        run_module(side, argv, process, f"the {suite.name} run")
    except BenchError as e:
        if suite.name == "benchmarks" and "(exit 5)" in str(e):
            raise BenchError(f"{side.name}: no benchmark in {suite.path}/ matches the selection (-k, arguments)") from None
        raise
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
    unit: str  # "s" or "calibration work units" (normalised)
    threshold: float
    changes: list[BenchmarkChange]
    only_base: list[str] = field(default_factory=list)
    only_head: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slower(self) -> list[BenchmarkChange]:
        return [c for c in self.changes if c.verdict == "slower"]

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", "", *[f"- {n}" for n in self.notes], ""]
        unit = "median" if self.unit == "s" else f"median ({self.unit})"
        lines += [f"| benchmark | base {unit} | head {unit} | head / base | 95% CI | verdict |", "|" + "---|" * 6]
        for c in self.changes:
            ci = "–" if c.change.low is None else f"[{c.change.low:.3f}, {c.change.high:.3f}]"
            base, head = (_fmt_value(statistics.median(v), self.unit) for v in (c.base, c.head))
            verdict = f"**{c.verdict}**" if c.verdict in ("slower", "faster") else c.verdict
            lines.append(f"| {c.name} | {base} | {head} | {c.change.ratio:.3f} | {ci} | {verdict} |")
        lines.append("")
        for what, names in (("only in base", self.only_base), ("only in head", self.only_head)):
            if names:
                lines.append(f"Not compared, {what}: {', '.join(names)}.")
        n_slow = len(self.slower)
        lines.append(f"Verdict at {self.threshold:.0%}: " + (f"{n_slow} significantly slower." if n_slow
                     else "nothing significantly slower."))  # fmt: skip
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title, "notes": self.notes, "unit": self.unit, "threshold": self.threshold,
            "benchmarks": [{"name": c.name, "base": c.base, "head": c.head, "change": asdict(c.change),
                            "verdict": c.verdict} for c in self.changes],
            "only_base": self.only_base, "only_head": self.only_head, **self.extra,
        }  # fmt: skip


def _fmt_value(x: float, unit: str) -> str:
    if unit != "s":
        return f"{x:.4g}"
    return f"{x * 1e3:.4g} ms" if x < 1 else f"{x:.4g} s"


def summarise(
    base: dict[str, list[float]], head: dict[str, list[float]], paired: bool, threshold: float
) -> tuple[list[BenchmarkChange], list[str], list[str]]:
    """Per benchmark present on both sides: the change and its verdict; plus the names on one side only."""
    changes = []
    for name in [n for n in head if n in base]:
        b, h = base[name], head[name]
        change = paired_change(b, h) if paired else unpaired_change(b, h)
        changes.append(BenchmarkChange(name, b, h, change, change.verdict(threshold)))
    return changes, [n for n in base if n not in head], [n for n in head if n not in base]


def _collect(runs: Sequence[SuiteRun]) -> dict[str, list[float]]:
    """Per benchmark, its median from every run (benchmarks missing from any run are dropped)."""
    names = [n for n in runs[0].medians if all(n in r.medians for r in runs)]
    return {n: [r.medians[n] for r in runs] for n in names}


def _this_machine(threads: int, gpu: bool) -> Fingerprint:
    """This process's fingerprint with the runs' thread count (runs on old commits record none)."""
    import torch

    return replace(fingerprint("cuda" if gpu and torch.cuda.is_available() else "cpu"), threads=threads)


def _machine_notes(runs: dict[str, list[SuiteRun]], threads: int, gpu: bool) -> list[str]:
    notes = []
    prints = {r.machine["fingerprint"]["id"]: r.machine["fingerprint"] for rs in runs.values() for r in rs if r.machine}
    if len(prints) <= 1:
        fp = Fingerprint.from_json(next(iter(prints.values()))) if prints else _this_machine(threads, gpu)
        notes.append(f"machine: {fp.describe()} (fingerprint {fp.id}); both sides ran here")
    elif prints:
        notes.append(f"WARNING: the runs report different machine fingerprints {sorted(prints)}; "
                     "was the environment changed during the comparison?")  # fmt: skip
    calib = {}
    for side, rs in runs.items():
        figures = [r.machine["calibration"]["tflops"] for r in rs if r.machine]
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
    keyword: str | None = None  # pytest -k (benchmarks suite)
    extra: tuple[str, ...] = ()  # more arguments for every run (pytest, or the speed table)
    rounds: int = 5
    threshold: float = THRESHOLD
    threads: int = 1
    timer: str = "cpu"  # a key of TIMERS (benchmarks suite; the speed table times itself)
    max_time: float = 1.0  # seconds per benchmark per run (benchmarks suite)
    cpus: tuple[int, ...] | None = None  # default: the last ``threads`` allowed CPUs

    def check(self) -> None:
        if self.suite not in SUITES:
            raise BenchError(f"--suite {self.suite!r}: expected one of {sorted(SUITES)}")
        if self.rounds < 2:
            raise BenchError(f"--rounds must be at least 2 (a confidence interval needs two), got {self.rounds}")
        if self.threads < 1 or self.timer not in TIMERS:
            raise BenchError(f"--threads must be >= 1 and --timer one of {sorted(TIMERS)}")
        if self.keyword and self.suite != "benchmarks":
            raise BenchError("-k selects pytest benchmarks; for the speed table pass its own options after --")


def compare(base_ref: str, head_ref: str | None, options: CompareOptions, repo: Path | None = None,
            log=print) -> ComparisonReport:  # fmt: skip
    """Run the suite of ``base_ref`` and ``head_ref`` (None: the working tree) in alternating rounds."""
    o = options
    o.check()
    suite = SUITES[o.suite]
    allowed = sorted(os.sched_getaffinity(0))
    cpus = o.cpus or tuple(allowed[-o.threads :])
    if not set(cpus) <= set(allowed) or len(cpus) < o.threads:
        raise BenchError(f"--cpus {list(cpus)}: need {o.threads} CPU(s) (one per thread) among the allowed {allowed}")
    repo = repo_root(repo or Path.cwd())
    env = {**os.environ, "OMP_NUM_THREADS": str(o.threads), "MKL_NUM_THREADS": str(o.threads)}
    env.pop("PYTHONPATH", None)  # each side's tree is put first on sys.path by _BOOTSTRAP
    process = Process(env, cpus)
    timer = TIMERS[o.timer] if o.suite == "benchmarks" else "the speed table's own (CUDA events on a GPU)"
    notes = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="magihuman-bench-")))
        base = stack.enter_context(checkout(repo, base_ref, "base", tmp))
        head = stack.enter_context(checkout(repo, head_ref, "head", tmp)) if head_ref else working_tree(repo)
        if not (repo / suite.path).exists():
            raise BenchError(f"the working tree {repo} has no {suite.path}")
        for side in (base, head):
            if side.tree != repo:
                use_suite_of(repo, side, suite.path)
        runs: dict[str, list[SuiteRun]] = {"base": [], "head": []}
        for i in range(o.rounds):
            for side in (base, head) if i % 2 == 0 else (head, base):
                out = tmp / f"{side.name}_{i}.json"
                argv = suite.argv(out, o.keyword, TIMERS[o.timer], o.max_time, o.extra)
                try:
                    run = run_suite(side, suite, argv, out, process)
                except BenchError as e:
                    if side.tree == repo or runs[side.name]:
                        raise
                    restore_own_suite(side, suite.path)  # the working tree's suite does not run here
                    notes.append(f"{side.name} ran its own {suite.path}, the working tree's does not run against "
                                 f"it: {str(e).strip().splitlines()[-1][:200]}")  # fmt: skip
                    run = run_suite(side, suite, argv, out, process)
                runs[side.name].append(run)
                log(f"[bench] round {i + 1}/{o.rounds} {side.name}: "
                    + ", ".join(f"{n} {_fmt_value(v, 's')}" for n, v in run.medians.items()))  # fmt: skip
    changes, only_base, only_head = summarise(_collect(runs["base"]), _collect(runs["head"]), True, o.threshold)
    notes = [
        f"base {base.label} = {base.commit[:10]}, head {head.label} = {head.commit[:10]}",
        *_machine_notes(runs, o.threads, gpu=o.suite == "speed"),
        f"{o.rounds} rounds alternating AB, BA, ...; each run a fresh process pinned to CPU(s) "
        f"{','.join(map(str, cpus))}; {o.threads} thread(s); timer {timer}"
        + {"time.process_time": " (CPU time)", "time.perf_counter": " (wall clock)"}.get(timer, ""),
        "per benchmark: median within each run; head / base = geometric mean of the per-round ratios, "
        "95% CI from a paired t-test on log times",
        *notes,
    ]
    title = f"magihuman-bench compare {base_ref} {head_ref or '(working tree)'}"
    extra = {"base_commit": base.commit, "head_commit": head.commit, "options": asdict(o), "cpus": list(cpus),
             "timer": timer, "machines": {s: [r.machine for r in rs] for s, rs in runs.items()}}  # fmt: skip
    return ComparisonReport(title, notes, "s", o.threshold, changes, only_base, only_head, extra)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="magihuman-bench", description=__doc__.split("\n\n")[0],
                                     epilog="compare: arguments after -- go to every run (pytest / the speed table)")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run the benchmarks of two commits alternately on this machine")
    c.add_argument("base", help="git ref of the base (e.g. origin/main, HEAD~1)")
    c.add_argument("head", nargs="?", help="git ref of the head (default: the working tree, uncommitted changes too)")
    c.add_argument("--suite", choices=sorted(SUITES), default="benchmarks",
                   help="benchmarks: the pytest-benchmark suite (CPU); speed: scripts/speed_table.py's experiments x stages (GPU)")
    c.add_argument("-k", dest="keyword", help="pytest -k expression selecting benchmarks (default: all)")
    c.add_argument("--rounds", type=int, default=5, help="alternating rounds per side (default 5)")
    c.add_argument("--threads", type=int, default=1, help="OMP/MKL threads for both sides (default 1)")
    c.add_argument("--timer", choices=sorted(TIMERS), default="cpu", help="cpu: process CPU time (default); wall")
    c.add_argument("--max-time", type=float, default=1.0, help="seconds spent per benchmark per run (default 1)")
    c.add_argument("--cpus", type=lambda v: [int(x) for x in v.split(",")],
                   help="pin every run to these CPUs, e.g. 1 or 0,1 (default: the last --threads allowed)")  # fmt: skip
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
            options = CompareOptions(args.suite, args.keyword, tuple(extra), args.rounds, args.threshold,
                                     args.threads, args.timer, args.max_time, tuple(args.cpus or ()) or None)  # fmt: skip
            report = compare(args.base, args.head, options)
        else:
            report = diff(args.base, args.head, args.threshold)
    except BenchError as e:
        print(f"magihuman-bench: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(report.to_markdown())
    if args.json:
        _write_json(args.json, report.to_json())
    raise SystemExit(1 if report.slower else 0)


if __name__ == "__main__":
    main()
