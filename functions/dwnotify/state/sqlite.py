"""The embedded SQLite state store: WAL journal, `BEGIN IMMEDIATE` for every write that must not race."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConflictError, StateError
from ..model import RunState, run_key
from .base import (
    FAILED,
    PENDING,
    TICK_LEASE,
    ActionRecord,
    Lease,
    LivingMessage,
    OutboxMessage,
    ProjectCursor,
    StatusReport,
    TickStart,
    check_cursor,
    message_data,
    read_cursor,
    read_lease_data,
    read_message,
    read_run,
    run_data,
    shift_seqs,
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    final INTEGER NOT NULL,
    data TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    project_id INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS living (
    channel TEXT NOT NULL,
    run_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (channel, run_key)
);
CREATE INDEX IF NOT EXISTS living_by_age ON living (updated_at);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_age ON actions (updated_at);
CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (status, channel, seq);
CREATE INDEX IF NOT EXISTS outbox_by_seq ON outbox (seq);
CREATE INDEX IF NOT EXISTS outbox_done ON outbox (finished_at) WHERE status != '{PENDING}';
CREATE INDEX IF NOT EXISTS runs_done ON runs (updated_at) WHERE final = 1;
"""
# Pruning: what is past retention goes at most this often per process, through the two partial indexes
# above (the statements name the indexed conditions literally, so that SQLite can use them).
PRUNE_EVERY_S = 3600.0
_PRUNE_OUTBOX = f"DELETE FROM outbox WHERE status != '{PENDING}' AND finished_at < ?"  # noqa: S608 - a constant
_PRUNE_RUNS = "DELETE FROM runs WHERE final = 1 AND updated_at < ?"
_PRUNE_LIVING = "DELETE FROM living WHERE updated_at < ?"
_PRUNE_ACTIONS = "DELETE FROM actions WHERE updated_at < ?"

_MESSAGE_COLUMNS = ("id", "channel", "seq", "status", "next_attempt_at", "created_at", "finished_at")


def _run_from_row(row: sqlite3.Row) -> RunState:
    return read_run(row["project_id"], row["run_id"], row["status"], row["version"], row["data"])


def _message_from_row(row: sqlite3.Row) -> OutboxMessage:
    return read_message({name: row[name] for name in _MESSAGE_COLUMNS}, row["data"])


def _message_row(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel,
        "seq": message.seq,
        "status": message.status,
        "next_attempt_at": message.next_attempt_at,
        "created_at": message.created_at,
        "finished_at": message.finished_at,
        "data": json.dumps(message_data(message), ensure_ascii=False),
    }


class SqliteStateStore:
    """StateStore on one SQLite file; safe for several processes at once."""

    def __init__(self, path: Path, retention_s: float = 30 * 86400) -> None:
        self._retention_s = retention_s
        self.round_trips = 0  # transactions, and statements outside one
        self.write_round_trips = 0  # write transactions
        self.prunes = 0
        self._pruned_at: float | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as error:  # e.g. FC's read-only code folder
            raise StateError(f"cannot open the SQLite state at {path}: {error}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken before anything is read.

        Every SQLite failure (a lock, a full disk, an I/O error, a read-only file), at `BEGIN`, inside
        or at `COMMIT`, leaves as a StateError with the transaction rolled back; ConflictError and any
        other error raised inside pass through unchanged, after the rollback.
        """
        self.round_trips += 1
        self.write_round_trips += 1
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StateError(f"cannot lock the SQLite state: {error}") from None
        try:
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise StateError(f"SQLite write failed: {error}") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """End the open transaction, if SQLite has not already ended it, without masking the cause."""
        if not self._db.in_transaction:  # e.g. SQLite rolled back itself after a full disk
            return
        with suppress(sqlite3.Error):  # the connection is unusable; the error being raised says why
            self._db.execute("ROLLBACK")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        self.round_trips += 1
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StateError(f"SQLite read failed: {error}") from None

    def load_runs(self, keys: Collection[str]) -> dict[str, RunState]:
        """The stored states of these runs."""
        found: dict[str, RunState] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT * FROM runs WHERE key IN ({marks})", chunk):  # noqa: S608
                found[row["key"]] = _run_from_row(row)
        return found

    def load_cursors(self, project_ids: Collection[int]) -> dict[int, ProjectCursor]:
        """The stored cursors of these workspaces."""
        self.round_trips += 1
        try:
            return self._cursors(self._db, project_ids)
        except sqlite3.Error as error:
            raise StateError(f"SQLite read failed: {error}") from None

    @staticmethod
    def _cursors(db: sqlite3.Connection, project_ids: Collection[int]) -> dict[int, ProjectCursor]:
        ids = list(project_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT * FROM cursors WHERE project_id IN ({marks})", ids).fetchall()  # noqa: S608
        cursors = {}
        for row in rows:
            cursor = read_cursor(row["project_id"], row["data"])
            if cursor is not None:
                cursors[row["project_id"]] = cursor
        return cursors

    def open_tick(self, project_ids: Collection[int], now: float) -> TickStart:
        """The cursors and the tick lease, in one read transaction (one snapshot, no write lock)."""
        self.round_trips += 1
        try:
            self._db.execute("BEGIN")
            try:
                cursors = self._cursors(self._db, project_ids)
                row = self._db.execute("SELECT * FROM leases WHERE name = ?", (TICK_LEASE,)).fetchone()
            finally:
                self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise StateError(f"SQLite read failed: {error}") from None
        lease = None
        if row is not None:
            data = read_lease_data(TICK_LEASE, row["data"])
            lease = Lease(TICK_LEASE, row["owner"] or "", row["expires_at"], data)
        return TickStart(cursors, lease)

    def acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
        """Take or renew a lease when it is free, expired or already ours."""
        with self._write() as db:
            row = db.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            current = Lease(name, row["owner"] or "", row["expires_at"]) if row is not None else None
            if current is not None and current.bars(owner, now):
                if current.from_a_clock_stepped_back(now, ttl_s):
                    db.execute("UPDATE leases SET expires_at = ? WHERE name = ?", (now + ttl_s, name))
                return None
            data = read_lease_data(name, row["data"]) if row is not None else {}
            db.execute(
                "INSERT INTO leases (name, owner, expires_at, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (name, owner, now + ttl_s, json.dumps(data)),
            )
        return Lease(name=name, owner=owner, expires_at=now + ttl_s, data=data)

    def release_lease(self, lease: Lease, data: Mapping[str, Any] | None = None) -> None:
        """Free the lease if still ours; its stored data stays for the next holder, or becomes `data`."""
        stored = json.dumps(data) if data is not None else None
        with self._write() as db:
            # Only while ours: a holder that lost the lease must not write its data over the next one's.
            db.execute(
                "UPDATE leases SET owner = NULL, expires_at = 0, data = COALESCE(?, data) "
                "WHERE name = ? AND owner = ?",
                (stored, lease.name, lease.owner),
            )

    def keep_lease_data(self, lease: Lease) -> None:
        """Store the lease's data if the lease is still ours."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE leases SET data = ? WHERE name = ? AND owner = ?",
                (json.dumps(lease.data), lease.name, lease.owner),
            )
            if changed.rowcount != 1:
                raise ConflictError(f"the {lease.name} lease is no longer held by this tick")

    @staticmethod
    def _check_lease(db: sqlite3.Connection, lease: Lease, now: float | None = None) -> None:
        row = db.execute("SELECT owner, expires_at FROM leases WHERE name = ?", (lease.name,)).fetchone()
        current = Lease(lease.name, row["owner"] or "", row["expires_at"]) if row is not None else None
        if current is None or not current.held_by(lease.owner, now):
            raise ConflictError(f"the {lease.name} lease is no longer held by this tick")

    def commit(
        self,
        lease: Lease,
        runs: Sequence[RunState],
        cursors: Sequence[ProjectCursor],
        messages: Sequence[OutboxMessage],
        now: float,
    ) -> None:
        """Store run states, cursors and new messages in one transaction."""
        with self._write() as db:
            self._check_lease(db, lease, now)
            if messages:
                top = db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
                messages = shift_seqs(messages, top)
            for state in runs:
                self._put_run(db, state, now)
            stored = self._cursors(db, [cursor.project_id for cursor in cursors])
            for cursor in cursors:
                check_cursor(cursor, stored.get(cursor.project_id))
                db.execute(
                    "INSERT OR REPLACE INTO cursors (project_id, data) VALUES (?, ?)",
                    (cursor.project_id, json.dumps(cursor.stored_data())),
                )
            for message in messages:
                db.execute(
                    "INSERT OR IGNORE INTO outbox (id, channel, seq, status, next_attempt_at, created_at, "
                    "finished_at, data) VALUES (:id, :channel, :seq, :status, :next_attempt_at, "
                    ":created_at, :finished_at, :data)",
                    _message_row(message),
                )
            self._prune(db, now)

    @staticmethod
    def _put_run(db: sqlite3.Connection, state: RunState, now: float) -> None:
        key = run_key(state.project_id, state.run_id)
        row = db.execute("SELECT version FROM runs WHERE key = ?", (key,)).fetchone()
        stored = row["version"] if row is not None else 0
        if stored != state.version:
            raise ConflictError(f"run {key} changed since it was read (version {stored})")
        db.execute(
            "INSERT OR REPLACE INTO runs (key, project_id, run_id, status, final, data, version, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                state.project_id,
                state.run_id,
                state.status,
                int(state.final),
                json.dumps(run_data(state), ensure_ascii=False),
                state.version + 1,
                now,
            ),
        )

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        """Forget finished runs and messages past retention, at most every PRUNE_EVERY_S."""
        if self._pruned_at is not None and abs(now - self._pruned_at) < PRUNE_EVERY_S:
            return  # abs: a clock stepped back must not hold pruning off for as long as it stepped
        self._pruned_at = now
        self.prunes += 1
        cutoff = now - self._retention_s
        db.execute(_PRUNE_OUTBOX, (cutoff,))
        db.execute(_PRUNE_RUNS, (cutoff,))
        db.execute(_PRUNE_LIVING, (cutoff,))
        db.execute(_PRUNE_ACTIONS, (cutoff,))

    def channels_with_pending(self) -> list[str]:
        """Channels that have pending messages."""
        rows = self._read("SELECT DISTINCT channel FROM outbox WHERE status = ?", (PENDING,))
        return sorted(row["channel"] for row in rows)

    def pending_messages(self, channel: str) -> list[OutboxMessage]:
        """A channel's pending messages in delivery order."""
        rows = self._read(
            "SELECT * FROM outbox WHERE status = ? AND channel = ? ORDER BY seq, id", (PENDING, channel)
        )
        return [_message_from_row(row) for row in rows]

    def update_messages(self, lease: Lease, messages: Sequence[OutboxMessage]) -> None:
        """Store messages' delivery status and the channel lease's data, if the lease is ours."""
        with self._write() as db:
            self._check_lease(db, lease)
            db.executemany(
                "UPDATE outbox SET status = :status, next_attempt_at = :next_attempt_at, "
                "finished_at = :finished_at, data = :data WHERE id = :id",
                [_message_row(message) for message in messages],
            )
            db.execute(
                "UPDATE leases SET data = ? WHERE name = ? AND owner = ?",
                (json.dumps(lease.data), lease.name, lease.owner),
            )

    def runs_updated_since(self, since: float, limit: int = 10_000) -> list[tuple[RunState, float]]:
        """Run states stored or changed at or after `since`, the most recent first."""
        rows = self._read(
            "SELECT * FROM runs WHERE updated_at >= ? ORDER BY updated_at DESC LIMIT ?", (since, limit)
        )
        return [(_run_from_row(row), float(row["updated_at"])) for row in rows]

    def load_living(self, channel: str, run_keys: Collection[str]) -> dict[str, LivingMessage]:
        """The living messages of these runs on `channel`."""
        found: dict[str, LivingMessage] = {}
        keys = list(run_keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT * FROM living WHERE channel = ? AND run_key IN ({marks})",  # noqa: S608 - marks only
                (channel, *chunk),
            )
            for row in rows:
                found[row["run_key"]] = LivingMessage.from_data(
                    channel, row["run_key"], row["version"], row["data"]
                )
        return found

    def store_living(self, living: LivingMessage, now: float) -> LivingMessage:
        """Store a living message at its next version, if that version is still the stored one."""
        stored = replace(living, version=living.version + 1)
        keys = {"channel": living.channel, "run_key": living.run_key}
        if not self._versioned_write("living", keys, stored.to_data(), living.version, now):
            raise ConflictError(f"the living message of run {living.run_key} on {living.channel} changed")
        return stored

    def load_action(self, key: str) -> ActionRecord | None:
        """The decision recorded for `key`, if any."""
        rows = self._read("SELECT * FROM actions WHERE key = ?", (key,))
        return ActionRecord.from_data(key, rows[0]["version"], rows[0]["data"]) if rows else None

    def store_action(self, record: ActionRecord, now: float) -> ActionRecord:
        """Store a decision at its next version, if that version is still the stored one (0: none)."""
        stored = replace(record, version=record.version + 1)
        if not self._versioned_write("actions", {"key": record.key}, stored.to_data(), record.version, now):
            raise ConflictError(f"the decision {record.key} was recorded by another request")
        return stored

    def _versioned_write(
        self, table: str, keys: Mapping[str, str], data: Mapping[str, Any], version: int, now: float
    ) -> bool:
        """Write a record's row at `version + 1`: created when `version` is 0 and there is none, else
        updated only while it is still at `version`; whether it was written (compare-and-set)."""
        columns, names = list(keys.values()), " AND ".join(f"{name} = ?" for name in keys)
        values = (json.dumps(dict(data)), version + 1, now)
        with self._write() as db:
            if version == 0:
                marks = ", ".join("?" * (3 + len(keys)))
                changed = db.execute(
                    f"INSERT INTO {table} (data, version, updated_at, {', '.join(keys)}) "  # noqa: S608 - names are ours
                    f"VALUES ({marks}) ON CONFLICT DO NOTHING",
                    (*values, *columns),
                )
            else:
                changed = db.execute(
                    f"UPDATE {table} SET data = ?, version = ?, updated_at = ? WHERE {names} AND version = ?",  # noqa: S608
                    (*values, *columns, version),
                )
            return changed.rowcount == 1

    def report(self, limit: int = 200) -> StatusReport:
        """Runs still moving and messages pending or failed."""
        runs = [
            _run_from_row(row)
            for row in self._read("SELECT * FROM runs WHERE final = 0 ORDER BY key LIMIT ?", (limit,))
        ]
        rows = self._read(
            "SELECT * FROM outbox WHERE status IN (?, ?) ORDER BY channel, seq LIMIT ?",
            (PENDING, FAILED, limit),
        )
        return StatusReport(runs=tuple(runs), messages=tuple(_message_from_row(row) for row in rows))

    def close(self) -> None:
        """Close the database."""
        try:
            self._db.close()
        except sqlite3.Error as error:
            raise StateError(f"cannot close the SQLite state: {error}") from None
