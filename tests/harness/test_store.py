"""ResultsStore: round trips, resume semantics, failures, concurrent writers, flattening."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import socket
import sqlite3
from contextlib import closing
from dataclasses import replace

import pytest

from magihuman.harness.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Claim,
    ResultsStore,
    RunRecord,
    StoreError,
    config_hash,
    flatten,
    format_error,
)
from tests.harness.synthetic import digest, grid, make_record, write_foreign_file


def test_config_hash_is_stable_and_order_free():
    a = {"sampler": "dmd", "nested": {"b": 1, "a": [1, 2]}, "num_steps": 8}
    b = {"num_steps": 8, "nested": {"a": [1, 2], "b": 1}, "sampler": "dmd"}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    assert config_hash(a) != config_hash(a | {"num_steps": 16})
    assert config_hash({"x": 1, "a": "b"}) == hashlib.sha256(b'{"a":"b","x":1}').hexdigest()[:16]  # canonical JSON


def test_record_round_trips(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    rec = make_record()
    assert store.record(rec)
    assert store.get(rec.run_id) == rec
    assert store.rows() == [rec]
    assert len(store) == 1 and store.get("nope") is None


def test_record_validates_status_and_params():
    with pytest.raises(ValueError, match="status"):
        replace(make_record(), status="done")
    with pytest.raises(ValueError, match="seed"):
        RunRecord(run_id="x", status="ok", started_at="", finished_at="", params={"sampler": "dmd"})


def test_resume_semantics(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    ok, bad = make_record(seed=1), make_record("failed", seed=2)
    store.record(ok)
    store.record(bad)
    assert store.done(ok.run_id) and not store.failed(ok.run_id)
    assert store.failed(bad.run_id) and not store.done(bad.run_id)
    assert not store.done("never-run") and not store.failed("never-run")
    assert store.done_ids() == {ok.run_id}
    assert [r.run_id for r in store.rows("failed")] == [bad.run_id]

    # a retry of the failed point that succeeds replaces the failure
    assert store.record(replace(bad, status="ok", error=None))
    assert store.done(bad.run_id)


def test_ok_row_survives_a_later_failure_unless_asked(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    ok = make_record()
    failure = make_record("failed")
    assert failure.run_id == ok.run_id
    store.record(ok)
    assert not store.record(failure)
    assert store.get(ok.run_id) == ok
    assert store.record(failure, replace_ok=True)
    assert store.failed(ok.run_id)


def test_failed_rows_keep_their_error(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    try:
        raise RuntimeError("CUDA out of memory at 1080p")
    except RuntimeError as e:
        error = format_error(e, max_chars=200)
    assert error.startswith("RuntimeError: CUDA out of memory at 1080p\n")
    assert "Traceback" in error and len(error) < 400
    rec = replace(make_record("failed"), error=error)
    store.record(rec)
    (row,) = store.rows("failed")
    assert row.error == error and row.status == "failed"


def test_params_are_real_columns(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    for rec in grid(failures=0):
        store.record(rec)
    with sqlite3.connect(path) as con:
        n = con.execute(
            "SELECT COUNT(*) FROM runs WHERE resolution = '540p' AND num_steps = 8 AND sampler = 'dmd' AND total_s > 0"
        ).fetchone()[0]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert n == 4  # 2 guidance x 2 prompts
    assert mode == "wal"


def test_missing_store_is_not_created_when_asked(tmp_path):
    with pytest.raises(FileNotFoundError):
        ResultsStore(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def _write_many(path: str, worker: int, n: int) -> None:
    store = ResultsStore(path)
    for i in range(n):
        store.record(make_record(seed=worker * 1000 + i))


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = str(tmp_path / "r.sqlite")  # both workers also race to create it
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(path, w, 60)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = ResultsStore(path)
    assert len(store) == 120
    assert len(store.done_ids()) == 120


def test_flatten_and_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    store = ResultsStore(tmp_path / "r.sqlite")
    for rec in grid(failures=2):
        store.record(rec)
    df = store.to_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == len(store)
    for col in ("param.sampler.num_steps", "param.sampler", "timing.base_denoise", "timing.total", "metric.psnr", "env.device"):
        assert col in df.columns, col
    assert set(df["status"]) == {"ok", "failed"}
    ok = df[df.status == "ok"]
    assert (ok["timing.total"] > ok["timing.base_denoise"]).all()
    assert ok["metric.flicker"].isna().all()
    assert (ok["metric_note.flicker"] == "needs a decoded reference clip").all()
    assert len(store.to_dataframe("failed")) == 2


def test_flatten_prefixes():
    flat = flatten(make_record(num_steps=4))
    assert flat["param.sampler.num_steps"] == 4
    assert len(flat["step_times"]) == 4
    assert "config" not in flat and flat["artifact.video"].endswith(".mp4")


def test_export_csv(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    for rec in grid(failures=1)[:5]:
        store.record(rec)
    path = store.export(tmp_path / "r.csv")
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and "timing.base_denoise" in lines[0]
    with pytest.raises(ValueError):
        store.export(tmp_path / "r.xlsx")


# --- read-only reading -----------------------------------------------------------------------


def test_read_only_store_reads_and_never_writes(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).record(make_record())
    before = digest(path)
    reader = ResultsStore(path, read_only=True)
    assert [r.run_id for r in reader.rows()] == [make_record().run_id]
    with pytest.raises(StoreError, match=f"cannot read the results store {path}.*readonly"):
        reader.record(make_record(seed=9))
    assert digest(path) == before


def test_a_store_on_read_only_media_is_read_as_immutable(tmp_path, monkeypatch):
    """Where SQLite cannot create a WAL store's -shm file, mode=ro fails; the store is read as immutable."""
    path = tmp_path / "r.sqlite"
    ResultsStore(path).record(make_record())
    before = digest(path)
    connect = sqlite3.connect

    def read_only_media(target, *args, **kwargs):
        if "mode=ro" in str(target):  # what SQLite says when it cannot create r.sqlite-shm
            raise sqlite3.OperationalError("unable to open database file")
        return connect(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_media)
    assert [r.run_id for r in ResultsStore(path, read_only=True).rows()] == [make_record().run_id]
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]


@pytest.mark.parametrize("kind", ["empty", "other app", "corrupt"])
def test_a_file_that_is_not_a_store_is_refused_by_name_and_left_alone(tmp_path, kind):
    path = write_foreign_file(tmp_path / "notes.db", kind)
    before = digest(path)
    message = "is not a magihuman results store" + (" (not a SQLite file)" if kind == "corrupt" else "")
    with pytest.raises(StoreError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        ResultsStore(path, read_only=True)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal / -shm / journal left


# --- claims: concurrent sweeps never compute a point twice -----------------------------------


def test_claims(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    rec = make_record()
    other = "elsewhere:123"
    assert store.claim(rec.run_id, owner=other) == Claim("claimed")
    assert store.claim(rec.run_id) == Claim("busy", other)  # a live sweep on another host holds it
    store.release(rec.run_id)  # only the owner's claim is dropped
    assert store.claim(rec.run_id) == Claim("busy", other)
    store.release(rec.run_id, owner=other)
    assert store.claim(rec.run_id) == Claim("claimed")
    store.record(rec)
    store.release(rec.run_id)
    assert store.claim(rec.run_id, owner=other) == Claim("done")


def test_stale_claims_are_taken_over(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    assert store.claim("a", owner=f"{socket.gethostname()}:{dead.pid}") == Claim("claimed")
    assert store.claim("a") == Claim("claimed")  # its process is gone
    assert store.claim("b", owner="elsewhere:1", ttl_s=0.0) == Claim("claimed")
    assert store.claim("b", ttl_s=0.0) == Claim("claimed")  # another host's claim past its time to live


def test_file_from_before_repeat_times_is_read_and_gains_the_column(tmp_path):
    path = tmp_path / "old.sqlite"
    rec = make_record()
    ResultsStore(path).record(rec)
    with closing(sqlite3.connect(path)) as con:  # a file written before the column existed
        con.execute("ALTER TABLE runs DROP COLUMN repeat_times")
        con.commit()
    (old,) = ResultsStore(path, read_only=True).rows()  # read as it is: the default
    assert old.repeat_times == [] and old.timings == rec.timings
    store = ResultsStore(path, create=False)
    assert store.get(rec.run_id).repeat_times == []  # the column is back, with its default
    store.record(replace(rec, run_id="new"))
    assert store.get("new").repeat_times == rec.repeat_times and len(store) == 2


def test_a_store_of_an_older_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as con:  # schema 1: runs keyed by a few params, no application id
        con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT)")
        con.execute("PRAGMA user_version=1")
        con.commit()
    before = digest(path)
    for read_only in (False, True):
        with pytest.raises(StoreError, match="schema 1 results store.*move it away"):
            ResultsStore(path, read_only=read_only)
    assert digest(path) == before


# --- a store is ours or refused ----------------------------------------------------------------


def _sqlite_of(path, *statements: str):
    with closing(sqlite3.connect(path)) as con:
        for statement in statements:
            con.execute(statement)
        con.commit()
    return path


def _truncated_store(path):
    ResultsStore(path)
    for rec in grid(failures=0):
        ResultsStore(path).record(rec)
    with closing(sqlite3.connect(path)) as con:  # everything into the main file, then cut it
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


FOREIGN = {  # what the file is -> (how to make it, what the error says)
    "users table": (lambda p: _sqlite_of(p, "CREATE TABLE users (id INTEGER, name TEXT)"),
                    r"not a magihuman results store: its tables \(users\)"),
    "own runs table": (lambda p: _sqlite_of(p, "PRAGMA journal_mode=WAL", "CREATE TABLE runs (id INTEGER, started TEXT)",
                                            "PRAGMA user_version=2"),
                       r"not a magihuman results store: its tables \(runs\)"),
    "other application id": (lambda p: _sqlite_of(p, "PRAGMA application_id=1", "CREATE TABLE t (x)"),
                             "application_id is 0x1, not magihuman's"),
    "garbage": (lambda p: write_foreign_file(p, "corrupt"), r"not a magihuman results store \(not a SQLite file\)"),
    "truncated store": (_truncated_store, r"\(corrupt\?\): database disk image is malformed"),
}  # fmt: skip


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
def test_a_file_that_is_not_ours_is_refused_and_never_written(tmp_path, kind, read_only):
    make, message = FOREIGN[kind]
    path = make(tmp_path / "app.db")
    before = digest(path)
    with pytest.raises(StoreError, match=message) as refused:
        ResultsStore(path, read_only=read_only)
    assert str(path) in str(refused.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal / -shm / journal left


def test_an_empty_file_becomes_a_marked_store(tmp_path):
    path = tmp_path / "new.sqlite"
    path.write_bytes(b"")  # e.g. made by mktemp
    ResultsStore(path).record(make_record())
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert len(ResultsStore(path, read_only=True)) == 1


def _unmark(path):
    with closing(sqlite3.connect(path)) as con:  # as an earlier magihuman wrote it
        con.execute("PRAGMA application_id=0")
        con.commit()
    return path


def test_an_unmarked_schema_2_store_of_an_earlier_version_opens_and_is_stamped(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).record(make_record())
    before = digest(_unmark(path))
    assert len(ResultsStore(path, read_only=True)) == 1 and digest(path) == before  # read as it is
    store = ResultsStore(path)
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert store.get(make_record().run_id) == make_record()


def test_an_unmarked_file_with_an_extra_table_is_not_taken_for_an_earlier_store(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).record(make_record())
    _sqlite_of(_unmark(path), "CREATE TABLE users (id INTEGER)")
    before = digest(path)
    with pytest.raises(StoreError, match=r"its tables \(claims, runs, users\)"):
        ResultsStore(path)
    assert digest(path) == before


@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
def test_a_directory_is_refused_by_name(tmp_path, read_only):
    with pytest.raises(StoreError, match=f"{re.escape(str(tmp_path))} is a directory"):
        ResultsStore(tmp_path, read_only=read_only)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused_with_the_cause(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).record(make_record())
    path.chmod(0)
    with pytest.raises(StoreError, match=f"cannot read the results store {re.escape(str(path))}: Permission denied"):
        ResultsStore(path)


def test_a_store_that_cannot_be_created_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=f"cannot create the results store {re.escape(str(blocker))}/r.sqlite"):
        ResultsStore(blocker / "r.sqlite")
