"""The durable queue: every request's state, logs and pending webhooks in one SQLite file (WAL).

A request accepted is a committed row, so it survives a crash of any process. States follow
fal's: ``IN_QUEUE`` -> ``IN_PROGRESS`` -> ``COMPLETED``, with ``outcome`` OK / ERROR /
CANCELLED once completed. Workers claim the oldest queued row in one ``BEGIN IMMEDIATE``
transaction, so no two workers ever take the same request. After a crash, :meth:`Store.recover`
puts running rows back at the head of the queue (they restart from the beginning with the
seed stored at submit, so the output is the same).

Each process and thread opens its own connection (SQLite connections are not shared).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    key_id TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    payload TEXT NOT NULL,
    file_token TEXT UNIQUE NOT NULL,
    webhook_url TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker INTEGER,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    error_type TEXT,
    inference_time REAL
);
CREATE INDEX IF NOT EXISTS requests_queue ON requests (status, seq);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    at REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_request ON logs (request_id, seq);
CREATE TABLE IF NOT EXISTS webhooks (
    request_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'PENDING',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (state, next_at);
CREATE TABLE IF NOT EXISTS workers (
    idx INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    device TEXT NOT NULL,
    load_s REAL
);
"""

QUEUED, RUNNING, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
OK, ERROR, CANCELLED = "OK", "ERROR", "CANCELLED"


class QueueFull(RuntimeError):
    pass


@dataclass(frozen=True)
class Request:
    """One row of ``requests``."""

    seq: int
    id: str
    key_id: str
    status: str
    outcome: str | None
    payload: dict[str, Any]
    file_token: str
    webhook_url: str | None
    cancel_requested: bool
    attempts: int
    worker: int | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: str | None
    error_type: str | None
    inference_time: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Request:
        values = dict(row)
        values["payload"] = json.loads(values["payload"])
        values["result"] = json.loads(values["result"]) if values["result"] is not None else None
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)


@dataclass(frozen=True)
class Webhook:
    request_id: str
    url: str
    body: bytes
    attempts: int


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._db().executescript(SCHEMA)  # idempotent; executescript commits by itself

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit; explicit BEGINs
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed request survives a power cut too
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, traceback) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> Store._Tx:
        return Store._Tx(self._db())

    # -- the API's side -------------------------------------------------------------

    def submit(self, request_id: str, key_id: str, payload: dict, file_token: str, webhook_url: str | None,
               max_queue: int) -> int:  # fmt: skip
        """Queue a validated request; returns its queue position (0: next). Raises :class:`QueueFull`."""
        with self._transaction() as db:
            queued = db.execute("SELECT COUNT(*) FROM requests WHERE status = ?", (QUEUED,)).fetchone()[0]
            if queued >= max_queue:
                raise QueueFull(f"the queue holds {queued} requests, its bound (server.max_queue); retry later")
            db.execute(
                "INSERT INTO requests (id, key_id, status, payload, file_token, webhook_url, submitted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, key_id, QUEUED, json.dumps(payload), file_token, webhook_url, time.time()),
            )
        return queued

    def get(self, request_id: str, key_id: str | None = None) -> Request | None:
        """The request, if it exists and (when ``key_id`` is given) belongs to that key."""
        row = self._db().execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None or (key_id is not None and row["key_id"] != key_id):
            return None
        return Request.from_row(row)

    def by_file_token(self, token: str, key_id: str) -> Request | None:
        row = self._db().execute("SELECT * FROM requests WHERE file_token = ? AND key_id = ?", (token, key_id))
        row = row.fetchone()
        return None if row is None else Request.from_row(row)

    def queue_position(self, request: Request) -> int:
        sql = "SELECT COUNT(*) FROM requests WHERE status = ? AND seq < ?"
        return self._db().execute(sql, (QUEUED, request.seq)).fetchone()[0]

    def logs(self, request_id: str) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT at, level, message FROM logs WHERE request_id = ? ORDER BY seq",
                                  (request_id,))  # fmt: skip
        return [dict(row) for row in rows]

    def cancel(self, request_id: str, key_id: str, webhook_body) -> str | None:
        """``CANCELLED`` (it was queued: done now), ``CANCELLATION_REQUESTED`` (running: the worker
        stops between sampler steps), ``ALREADY_COMPLETED``, or None (no such request for this key)."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM requests WHERE id = ? AND key_id = ?", (request_id, key_id)).fetchone()
            if row is None:
                return None
            if row["status"] == COMPLETED:
                return "ALREADY_COMPLETED"
            if row["status"] == RUNNING:
                db.execute("UPDATE requests SET cancel_requested = 1 WHERE id = ?", (request_id,))
                return "CANCELLATION_REQUESTED"
            self._complete(db, Request.from_row(row), CANCELLED, None, "cancelled while queued", "request_cancelled",
                           None, webhook_body)  # fmt: skip
            return "CANCELLED"

    # -- the workers' side ----------------------------------------------------------

    def claim(self, worker: int) -> Request | None:
        """Take the oldest queued request (``IN_PROGRESS`` under ``worker``), or None."""
        with self._transaction() as db:
            row = db.execute("SELECT seq FROM requests WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE requests SET status = ?, worker = ?, started_at = ?, attempts = attempts + 1 "
                       "WHERE seq = ?", (RUNNING, worker, time.time(), row["seq"]))  # fmt: skip
            return Request.from_row(db.execute("SELECT * FROM requests WHERE seq = ?", (row["seq"],)).fetchone())

    def log(self, request_id: str, message: str, level: str = "INFO") -> None:
        self._db().execute("INSERT INTO logs (request_id, at, level, message) VALUES (?, ?, ?, ?)",
                           (request_id, time.time(), level, message))  # fmt: skip

    def cancel_requested(self, request_id: str) -> bool:
        row = self._db().execute("SELECT cancel_requested FROM requests WHERE id = ?", (request_id,)).fetchone()
        return bool(row and row[0])

    def complete(self, request: Request, outcome: str, result: dict | None, error: str | None,
                 error_type: str | None, inference_time: float | None, webhook_body) -> None:  # fmt: skip
        """Finish a running request and queue its webhook, in one transaction."""
        with self._transaction() as db:
            self._complete(db, request, outcome, result, error, error_type, inference_time, webhook_body)

    @staticmethod
    def _complete(db, request: Request, outcome, result, error, error_type, inference_time, webhook_body) -> None:
        now = time.time()
        db.execute("UPDATE requests SET status = ?, outcome = ?, result = ?, error = ?, error_type = ?, "
                   "inference_time = ?, finished_at = ? WHERE id = ?",
                   (COMPLETED, outcome, None if result is None else json.dumps(result), error, error_type,
                    inference_time, now, request.id))  # fmt: skip
        if request.webhook_url:
            body = webhook_body(request.id, outcome, result, error, error_type)
            db.execute("INSERT OR REPLACE INTO webhooks (request_id, url, body, next_at) VALUES (?, ?, ?, ?)",
                       (request.id, request.webhook_url, json.dumps(body), now))  # fmt: skip

    def worker_ready(self, worker: int, pid: int, device: str, load_s: float) -> None:
        self._db().execute("INSERT OR REPLACE INTO workers (idx, pid, device, load_s) VALUES (?, ?, ?, ?)",
                           (worker, pid, device, load_s))  # fmt: skip

    def ready_workers(self, pids: dict[int, int]) -> dict[int, float]:
        """Load seconds of the workers (index -> pid) that have said they are ready."""
        rows = self._db().execute("SELECT idx, pid, load_s FROM workers")
        return {row["idx"]: row["load_s"] for row in rows if pids.get(row["idx"]) == row["pid"]}

    # -- recovery -------------------------------------------------------------------

    def recover(self, max_attempts: int, webhook_body, worker: int | None = None) -> list[str]:
        """Requeue the running requests of a dead worker (``worker``; None: all, at start-up).

        A request whose cancel was asked is cancelled; one that took down its worker
        ``max_attempts`` times fails; the others go back to the queue at their old place.
        Returns the ids put back in the queue.
        """
        requeued = []
        with self._transaction() as db:
            sql, args = "SELECT * FROM requests WHERE status = ?", [RUNNING]
            if worker is not None:
                sql, args = sql + " AND worker = ?", args + [worker]
            for row in db.execute(sql, args).fetchall():
                request = Request.from_row(row)
                if request.cancel_requested:
                    self._complete(db, request, CANCELLED, None, "cancelled while running", "request_cancelled",
                                   None, webhook_body)  # fmt: skip
                elif request.attempts >= max_attempts:
                    self._complete(db, request, ERROR, None, f"the worker stopped {request.attempts} times while "
                                   "running this request", "worker_lost", None, webhook_body)  # fmt: skip
                else:
                    db.execute("UPDATE requests SET status = ?, worker = NULL, started_at = NULL WHERE id = ?",
                               (QUEUED, request.id))  # fmt: skip
                    db.execute("INSERT INTO logs (request_id, at, level, message) VALUES (?, ?, ?, ?)",
                               (request.id, time.time(), "WARN", "the worker stopped; the request is queued again "
                                "and restarts from the beginning with the same seed"))  # fmt: skip
                    requeued.append(request.id)
        return requeued

    # -- webhooks -------------------------------------------------------------------

    def due_webhooks(self, limit: int) -> list[Webhook]:
        rows = self._db().execute("SELECT request_id, url, body, attempts FROM webhooks WHERE state = 'PENDING' "
                                  "AND next_at <= ? ORDER BY next_at LIMIT ?", (time.time(), limit))  # fmt: skip
        return [Webhook(row["request_id"], row["url"], row["body"].encode(), row["attempts"]) for row in rows]

    def webhook_attempted(self, request_id: str, delivered: bool, error: str | None, retry_in: float | None) -> None:
        """Record one delivery attempt: delivered, to be retried in ``retry_in`` s, or given up (None)."""
        state = "DELIVERED" if delivered else ("PENDING" if retry_in is not None else "FAILED")
        self._db().execute("UPDATE webhooks SET state = ?, attempts = attempts + 1, next_at = ?, last_error = ? "
                           "WHERE request_id = ?", (state, time.time() + (retry_in or 0), error, request_id))  # fmt: skip

    def webhook_state(self, request_id: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT state, attempts, last_error FROM webhooks WHERE request_id = ?",
                                 (request_id,)).fetchone()  # fmt: skip
        return None if row is None else dict(row)
