"""Results store for sweeps: one typed ``RunRecord`` per run, kept in a SQLite file.

Why SQLite (stdlib ``sqlite3``): one file, no server; queryable with SQL, pandas
(``read_sql``) or DuckDB; every write is an atomic transaction, so a killed sweep
never leaves a half-written row; and with WAL journaling plus a busy timeout several
processes (joblib/loky workers) can append to the same file without losing rows.
WAL needs a local filesystem (not NFS).

Rows are keyed by ``run_id`` (``config_hash`` of the point's params: all its settings). The dicts are
stored as JSON columns; the swept params, status and total time also get real columns
so they can be filtered and indexed in SQL. A restarted sweep asks ``done(run_id)``
and skips what already finished ok.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import sqlite3
import tempfile
import time
import traceback
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from magihuman import clip
from magihuman.stages import STAGES

Status = Literal["ok", "failed"]
STATUSES: tuple[str, ...] = ("ok", "failed")
SAMPLERS: tuple[str, ...] = ("unipc_cfg", "dmd", "sde")
RESOLUTIONS: tuple[str, ...] = tuple(clip.RESOLUTIONS)  # also the display order
MODES: tuple[str, ...] = ("t2v", "ti2v", "a2v")
# The params every record has: also SQL columns, for filtering (a point's full identity is its ``params``).
PARAM_KEYS: tuple[str, ...] = ("sampler", "sampler.num_steps", "sampler.guidance_scale", "resolution", "mode",
                               "duration", "quant", "prompt_id", "seed")  # fmt: skip
# STAGES (magihuman.stages): the pipeline's stage names; "total" is kept beside them in ``timings``
SCHEMA_VERSION = 2  # 2: a point's params are all of its settings (1 keyed points on a few)
APPLICATION_ID = int.from_bytes(b"MgHm", "big")
"""SQLite's ``application_id`` header field of every store we create: a file is ours by this mark
(or, for a schema-2 store written before the mark existed, by its exact tables and columns)."""
CLAIM_TTL_S = 24 * 3600.0
"""A claim by a process on another host (whose liveness cannot be checked) expires after this."""


class StoreError(RuntimeError):
    """A file that cannot be read as a magihuman results store; the message names the file."""


def config_hash(config: dict[str, Any]) -> str:
    """Stable id of a resolved config: sha256 of canonical JSON (sorted keys), 16 hex.

    Non-JSON values (paths, enums) are hashed through ``str``; tuples hash like lists.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, the format of ``started_at``/``finished_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def format_error(exc: BaseException, max_chars: int = 4000) -> str:
    """``Type: message`` then the traceback, keeping its last ``max_chars`` characters
    (the innermost frames, where the error is)."""
    head = f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > max_chars:
        tb = "Traceback (most recent call last):\n  ...\n" + tb[-max_chars:]
    return f"{head}\n{tb}"


@dataclass
class RunRecord:
    """One run of one sweep point: what was run, how long each stage took, how good it was."""

    run_id: str
    status: Status
    started_at: str
    finished_at: str
    params: dict[str, Any]
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, plus "total"
    step_times: list[float] = field(default_factory=list)  # seconds per denoise step
    repeat_times: list[float] = field(default_factory=list)  # total seconds of each timed repeat (timings: the median)
    peak_memory_bytes: int = 0
    flops: float = 0.0  # total DiT FLOPs
    tflops_per_s: float | None = None
    mfu: float | None = None
    load_s: float | None = None  # building the pipeline + loading its first DiT; None: loaded by an earlier point
    warmup_s: float | None = None  # the untimed warm-up runs (first-call costs: allocator, codec, compile)
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_notes: dict[str, str] = field(default_factory=dict)  # why a metric is None
    env: dict[str, Any] = field(default_factory=dict)  # git_commit, torch, cuda, device, dtype, hostname
    config: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        missing = [k for k in PARAM_KEYS if k not in self.params]
        if missing:
            raise ValueError(f"params missing {missing} (run {self.run_id})")

    @property
    def total_time(self) -> float | None:
        """End-to-end seconds: ``timings['total']``, else the sum of the stages, else None."""
        if "total" in self.timings:
            return self.timings["total"]
        return sum(self.timings.values()) if self.timings else None


_JSON_FIELDS = ("params", "timings", "step_times", "metrics", "metric_notes", "env", "config", "artifacts",
                "repeat_times")  # fmt: skip
# Columns added after files were written: added (with this default) when such a file is opened for writing,
# and read as the default from a file that lacks them.
_ADDED_COLUMNS = {"repeat_times": "[]"}
_SCALAR_FIELDS = ("error", "started_at", "finished_at", "peak_memory_bytes", "flops", "tflops_per_s", "mfu", "load_s",
                  "warmup_s")  # fmt: skip
_PARAM_COLUMNS = {  # column: (param, SQL type)
    "sampler": ("sampler", "TEXT"),
    "num_steps": ("sampler.num_steps", "INTEGER"),
    "guidance_scale": ("sampler.guidance_scale", "REAL"),
    "resolution": ("resolution", "TEXT"),
    "mode": ("mode", "TEXT"),
    "duration": ("duration", "REAL"),
    "quant": ("quant", "TEXT"),
    "prompt_id": ("prompt_id", "TEXT"),
    "seed": ("seed", "INTEGER"),
}
_COLUMNS = ("run_id", "status", *_SCALAR_FIELDS, *_PARAM_COLUMNS, "total_s", *_JSON_FIELDS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    peak_memory_bytes INTEGER,
    flops REAL,
    tflops_per_s REAL,
    mfu REAL,
    load_s REAL,
    warmup_s REAL,
    {", ".join(f"{name} {kind}" for name, (_, kind) in _PARAM_COLUMNS.items())},
    total_s REAL,
    {", ".join(f"{name} TEXT NOT NULL" for name in _JSON_FIELDS)}
);
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE INDEX IF NOT EXISTS runs_point ON runs (resolution, sampler, num_steps, guidance_scale, mode);
"""
_UNMARKED_TABLES = {"runs": set(_COLUMNS) - set(_ADDED_COLUMNS), "claims": {"run_id", "owner", "claimed_at"}}
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class _Contents:
    """What an existing SQLite file holds, read without changing it."""

    application_id: int
    user_version: int
    columns: dict[str, set[str]]  # table -> its columns

    @property
    def kind(self) -> Literal["ours", "unmarked", "empty", "old schema", "foreign"]:
        """``ours`` (our application id); ``unmarked``: a schema-2 store from before the id, by its
        exact tables and columns; ``empty``: no tables (a file SQLite just made)."""
        if self.application_id == APPLICATION_ID:
            return "ours" if self.user_version == SCHEMA_VERSION else "old schema"
        if self.application_id != 0:
            return "foreign"
        if self.user_version == 0 and not self.columns:
            return "empty"
        without_added = {t: cols - set(_ADDED_COLUMNS) if t == "runs" else cols for t, cols in self.columns.items()}
        if self.user_version == SCHEMA_VERSION and without_added == _UNMARKED_TABLES:
            return "unmarked"
        return "old schema" if "runs" in self.columns and self.user_version != SCHEMA_VERSION else "foreign"


def _read_contents(con: sqlite3.Connection) -> _Contents:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return _Contents(
        application_id=con.execute("PRAGMA application_id").fetchone()[0],
        user_version=con.execute("PRAGMA user_version").fetchone()[0],
        columns={t: {r[1] for r in con.execute(f"PRAGMA table_info({t!r})")} for t in tables},
    )


def _to_row(rec: RunRecord) -> tuple:
    values: dict[str, Any] = {"run_id": rec.run_id, "status": rec.status, "total_s": rec.total_time}
    values.update({name: getattr(rec, name) for name in _SCALAR_FIELDS})
    values.update({name: rec.params[param] for name, (param, _) in _PARAM_COLUMNS.items()})
    values.update({name: json.dumps(getattr(rec, name), default=str) for name in _JSON_FIELDS})
    return tuple(values[c] for c in _COLUMNS)


def _from_row(row: sqlite3.Row) -> RunRecord:
    kwargs = {f.name: row[f.name] for f in fields(RunRecord) if f.name not in _JSON_FIELDS}
    present = set(row.keys())  # a file opened read-only may predate an added column
    kwargs.update({name: json.loads(row[name] if name in present else _ADDED_COLUMNS[name]) for name in _JSON_FIELDS})
    return RunRecord(**kwargs)


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`ResultsStore.claim`: ``claimed`` (this process computes the point),
    ``done`` (already recorded ok) or ``busy`` (``holder``, another live sweep, computes it)."""

    status: Literal["claimed", "done", "busy"]
    holder: str | None = None


def process_owner() -> str:
    """``host:pid`` of this process, the owner recorded with its claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str, claimed_at: float, ttl_s: float) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return time.time() - claimed_at < ttl_s
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultsStore:
    """A SQLite file of ``RunRecord`` rows, one per ``run_id``.

    Holds only the path: each call opens a short-lived connection, so a store can be
    pickled into worker processes and used from several of them at once.

    ``read_only=True`` opens an existing store for reading (SQLite URI ``mode=ro``): nothing
    is created or changed in the file, stores on read-only media can be read, and a file that
    is not a magihuman store (or is corrupt) raises :class:`StoreError` naming it.
    """

    def __init__(self, path: str | Path, create: bool = True, timeout_s: float = 60.0, read_only: bool = False):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.read_only = read_only
        self._read_mode = "mode=ro"
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; the results store is a SQLite file")
        if read_only or self.path.exists():
            if not self.path.exists():
                raise FileNotFoundError(f"no results store at {self.path}")
            self._inspect(allow_new=not read_only)  # read-only: a file we refuse is never opened for writing
            if read_only:
                return
        elif not create:
            raise FileNotFoundError(f"no results store at {self.path}")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the results store {self.path}: {e}") from e
        self._prepare()

    def _inspect(self, allow_new: bool) -> None:
        """Refuse (StoreError naming the file and why) anything but a magihuman store, or, with
        ``allow_new``, an empty file; reads the file through a read-only connection only."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise StoreError(f"cannot read the results store {self.path}: {e.strerror or e}") from e
        if not head and allow_new:
            return  # a new empty file: the writer makes it a store
        if head != _SQLITE_MAGIC:
            what = "an empty file" if not head else "not a SQLite file"
            raise StoreError(f"{self.path} is not a magihuman results store ({what})")
        # A read-only connection to a WAL-mode file creates its -wal and -shm files and leaves
        # them; a file we refuse gets back exactly the neighbours it had.
        sidecars = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]
        absent = [p for p in sidecars if not p.exists()]
        try:
            self._check_contents(allow_new)
        except StoreError:
            for p in absent:
                p.unlink(missing_ok=True)
            raise

    def _check_contents(self, allow_new: bool) -> None:
        try:
            contents = self._checked_contents()
        except StoreError as e:
            if not isinstance(e.__cause__, sqlite3.OperationalError):
                raise
            # A WAL store where SQLite cannot create its -shm file (read-only media or
            # directory): nobody can write it there, so it is read as immutable.
            self._read_mode = "immutable=1"
            contents = self._checked_contents()
        self._accept(contents, allow_new)

    def _accept(self, contents: _Contents, allow_new: bool) -> None:
        """Raise StoreError naming the file unless it is ours, unmarked (an earlier version's) or,
        with ``allow_new``, empty."""
        kind = contents.kind
        if kind == "old schema":
            raise StoreError(f"{self.path} is a schema {contents.user_version} results store; this magihuman uses "
                             f"schema {SCHEMA_VERSION} (points keyed by all their settings): move it away and re-run")
        if kind == "foreign" and contents.application_id != 0:
            raise StoreError(f"{self.path} is not a magihuman results store: its SQLite application_id is "
                             f"{contents.application_id:#x}, not magihuman's {APPLICATION_ID:#x}")  # fmt: skip
        if kind == "foreign" or (kind == "empty" and not allow_new):
            found = ", ".join(sorted(contents.columns)) or "none"
            raise StoreError(f"{self.path} is not a magihuman results store: its tables ({found}) are not a "
                             "sweep's runs and claims")  # fmt: skip

    def _checked_contents(self) -> _Contents:
        with self._connect(read_only=True) as con:
            problems = [r[0] for r in con.execute("PRAGMA quick_check")]  # a truncated or damaged file
            if problems != ["ok"]:
                raise StoreError(f"cannot read the results store {self.path} (corrupt?): {'; '.join(problems[:3])}")
            return _read_contents(con)

    def _prepare(self) -> None:
        """Make an empty file a store, stamp an unmarked schema-2 store, add missing columns: one
        transaction, re-checked under the write lock (another process may be creating it)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                contents = _read_contents(con)
                self._accept(contents, allow_new=True)
                kind = contents.kind
                if kind == "empty":
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        con.execute(statement)
                    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                for name, default in _ADDED_COLUMNS.items():
                    if kind != "empty" and name not in contents.columns["runs"]:
                        con.execute(f"ALTER TABLE runs ADD COLUMN {name} TEXT NOT NULL DEFAULT '{default}'")
                if kind != "ours":
                    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @contextmanager
    def _connect(self, read_only: bool | None = None) -> Iterator[sqlite3.Connection]:
        if self.read_only if read_only is None else read_only:
            try:
                uri = f"{self.path.resolve().as_uri()}?{self._read_mode}"
                with closing(sqlite3.connect(uri, uri=True, timeout=self.timeout_s)) as con:
                    con.row_factory = sqlite3.Row
                    yield con
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot read the results store {self.path} (corrupt?): {e}") from e
            return
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the
        # write lock up front (waiting up to timeout_s) instead of failing on upgrade.
        try:
            with closing(sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)) as con:
                con.row_factory = sqlite3.Row
                con.execute("PRAGMA synchronous=NORMAL")
                yield con
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot write the results store {self.path}: {e}") from e

    def record(self, rec: RunRecord, replace_ok: bool = False) -> bool:
        """Insert or replace the row of ``rec.run_id`` in one transaction; True if written.

        A row that finished ok is kept when ``rec`` failed (a flaky rerun must not erase
        a good result) unless ``replace_ok``.
        """
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "run_id")
        guard = "" if replace_ok else "WHERE runs.status != 'ok' OR excluded.status = 'ok'"
        sql = (
            f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates} {guard}"
        )
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                written = con.execute(sql, _to_row(rec)).rowcount == 1
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return written

    def claim(self, run_id: str, owner: str | None = None, ttl_s: float = CLAIM_TTL_S) -> Claim:
        """Take ``run_id`` for ``owner`` (default: this process) unless it is done or another
        live process holds it; one transaction, so two sweeps never both compute a point.

        A holder is live while its process runs (same host) or, on another host, for ``ttl_s``.
        """
        owner = owner or process_owner()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                held = con.execute("SELECT owner, claimed_at FROM claims WHERE run_id = ?", (run_id,)).fetchone()
                if row is not None and row["status"] == "ok":
                    claim = Claim("done")
                elif held is not None and held["owner"] != owner and _owner_alive(*held, ttl_s):
                    claim = Claim("busy", held["owner"])
                else:
                    con.execute("INSERT OR REPLACE INTO claims (run_id, owner, claimed_at) VALUES (?, ?, ?)",
                                (run_id, owner, time.time()))  # fmt: skip
                    claim = Claim("claimed")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return claim

    def release(self, run_id: str, owner: str | None = None) -> None:
        """Drop ``owner``'s claim on ``run_id`` (after its record is written)."""
        with self._connect() as con:
            con.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (run_id, owner or process_owner()))

    def _status(self, run_id: str) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else row["status"]

    def done(self, run_id: str) -> bool:
        """True if ``run_id`` finished ok: a restarted sweep skips it."""
        return self._status(run_id) == "ok"

    def failed(self, run_id: str) -> bool:
        """True if the last recorded attempt of ``run_id`` failed."""
        return self._status(run_id) == "failed"

    def done_ids(self) -> set[str]:
        """All run_ids that finished ok (one query, for skipping many points at once)."""
        with self._connect() as con:
            return {r["run_id"] for r in con.execute("SELECT run_id FROM runs WHERE status = 'ok'")}

    def get(self, run_id: str) -> RunRecord | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _from_row(row)

    def rows(self, status: Status | None = None) -> list[RunRecord]:
        """All records (or those with ``status``), oldest finish first."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._connect() as con:
            cur = con.execute(f"SELECT * FROM runs {where} ORDER BY finished_at, run_id", args)
            return [_from_row(r) for r in cur]

    def __len__(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def to_dataframe(self, status: Status | None = None):
        """A pandas DataFrame of ``flatten``ed rows (``param.*``, ``timing.*``, ``metric.*`` ...)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from e
        return pd.DataFrame([flatten(r) for r in self.rows(status)])

    def export(self, path: str | Path) -> Path:
        """Write the flattened rows to ``.csv`` (stdlib) or ``.parquet`` (pandas + pyarrow)."""
        path = Path(path)
        flat = [flatten(r) for r in self.rows()]
        if path.suffix == ".parquet":
            self.to_dataframe().to_parquet(path)
        elif path.suffix == ".csv":
            columns = list(dict.fromkeys(k for row in flat for k in row))
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                for row in flat:
                    writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
        else:
            raise ValueError(f"export to .csv or .parquet, not {path.suffix!r}")
        return path


def flatten(rec: RunRecord) -> dict[str, Any]:
    """One flat dict per record: ``param.X``, ``timing.X``, ``metric.X``, ``metric_note.X``,
    ``env.X``, ``artifact.X`` plus the scalar fields; ``config`` is left out (see ``rows``)."""
    out: dict[str, Any] = {"run_id": rec.run_id, "status": rec.status, "error": rec.error}
    out.update({"started_at": rec.started_at, "finished_at": rec.finished_at})
    for prefix, d in (("param", rec.params), ("timing", rec.timings)):
        out.update({f"{prefix}.{k}": v for k, v in d.items()})
    out["step_times"] = list(rec.step_times)
    out["repeat_times"] = list(rec.repeat_times)
    out.update({k: getattr(rec, k) for k in ("peak_memory_bytes", "flops", "tflops_per_s", "mfu", "load_s", "warmup_s")})
    nested = {"metric": rec.metrics, "metric_note": rec.metric_notes, "env": rec.env, "artifact": rec.artifacts}
    for prefix, d in nested.items():
        out.update({f"{prefix}.{k}": v for k, v in d.items()})
    return out


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to a temp file beside ``path``, then rename over it: readers never see half a file."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
