"""The Tablestore state store: one table, batched reads and writes, conditions where writes may race.

Leases are compare-and-set on a `version` column. A commit spans partitions, which Tablestore cannot
write atomically, so it goes through an intent: check the tick lease and the runs' versions (one
BatchGetRow), store everything the commit will write as intent rows, apply it (runs as conditional
writes, then the messages of the runs that were written, then the channels' low-water marks), then
delete the intent. A commit that dies after storing its intent is finished, idempotently, by the
next tick that takes the tick lease, before that tick reads any state (intent rows sit beside the
tick lease row: the GetRange that reads the lease finds them). Row layout:
`tablestore_rows`; the SDK boundary: `tablestore_client`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..credentials import Credentials
from ..errors import ConflictError
from ..model import RunState, run_key
from . import tablestore_rows as rows
from .base import (
    FAILED,
    TICK_LEASE,
    UNREADABLE,
    ActionRecord,
    Lease,
    LivingMessage,
    OutboxMessage,
    ProjectCursor,
    StatusReport,
    TickStart,
    check_cursor,
    leased_channel,
    shift_seqs,
)
from .tablestore_client import Table, Write
from .tablestore_outbox import Outbox, cas
from .tablestore_rows import Cells, Intent, Key

log = logging.getLogger(__name__)

# How long the read at a tick's start holds the tick lease while it finishes a stopped tick's commit.
_RECOVERY_LEASE_S = 60.0


@dataclass
class _Held:
    """A lease this store took: enough to renew it with one conditional write."""

    owner: str
    version: int
    data: dict[str, Any]
    failed: list[str] = field(default_factory=list)
    unfinished: bool = False  # a commit under it stopped after its intent may have been stored


class TablestoreStateStore:
    """StateStore on one Tablestore table; safe for any number of ticks at once."""

    def __init__(
        self,
        endpoint: str,
        instance: str,
        table: str,
        credentials: Credentials,
        retention_s: float = 30 * 86400,
        *,
        socket_timeout_s: float = 10.0,
    ) -> None:
        token = credentials.security_token.reveal() if credentials.security_token else None
        self._table = Table(
            endpoint,
            instance,
            table,
            credentials.access_key_id,
            credentials.access_key_secret.reveal(),
            token,
            ttl_s=max(86400, int(retention_s)),  # the service's shortest TTL is one day
            socket_timeout_s=socket_timeout_s,
        )
        self._held: dict[str, _Held] = {}
        self._outbox = Outbox(self._table)

    @property
    def round_trips(self) -> int:
        """SDK calls made so far (each is one request, plus the SDK's own retries)."""
        return self._table.round_trips

    @property
    def write_round_trips(self) -> int:
        """SDK calls made so far that write."""
        return self._table.write_round_trips

    # -- reads -------------------------------------------------------------------------------
    def load_runs(self, keys: Collection[str]) -> dict[str, RunState]:
        """The stored states of these runs (BatchGetRow, 100 a call)."""
        by_row = {rows.run_row_key(key): key for key in keys}
        found = self._table.get_many(by_row)
        return {by_row[row]: rows.run_from_cells(row, cells) for row, cells in found.items()}

    def load_cursors(self, project_ids: Collection[int]) -> dict[int, ProjectCursor]:
        """The stored cursors of these workspaces."""
        return _cursors_of(self._table.get_many(rows.cursor_key(project_id) for project_id in project_ids))

    def open_tick(self, project_ids: Collection[int], now: float) -> TickStart:
        """The tick lease row and the cursors in one BatchGetRow.

        A lease row still naming an owner after it expired is a tick that stopped while it held the
        lease, perhaps mid-commit: the lease is taken (which finishes any intent it left) and given
        back, and the cursors read again.
        """
        lease_row = rows.lease_key(TICK_LEASE)
        found = self._table.get_many([lease_row, *(rows.cursor_key(pid) for pid in project_ids)])
        cells = found.pop(lease_row, None)
        lease = rows.lease_from_cells(TICK_LEASE, cells) if cells is not None else None
        if lease is not None and lease.owner and lease.expires_at <= now:
            recovery = self.acquire_lease(TICK_LEASE, f"recovery-{uuid.uuid4().hex}", _RECOVERY_LEASE_S, now)
            if recovery is not None:
                self.release_lease(recovery)
                return TickStart(self.load_cursors(project_ids), None)
        return TickStart(_cursors_of(found), lease)

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
        """Take or renew a lease when it is free, expired or already ours (version compare-and-set).

        A new holder of the tick lease first finishes any commit a stopped tick left half-done.
        """
        key, expires = rows.lease_key(name), now + ttl_s
        held = self._held.get(name)
        if held is not None and held.owner == owner:
            renew = {"expires_at": expires, "version": held.version + 1}
            if self._table.write([cas(key, held.version, renew)])[0]:
                held.version += 1
                return Lease(name, owner, expires, dict(held.data))
        self._held.pop(name, None)
        intents: list[tuple[Key, Cells]] = []
        if name == TICK_LEASE:  # one GetRange reads the lease row and any intent left beside it
            found = dict(self._table.scan(key[0], rows.TICK_RANGE[0], sk_to=rows.TICK_RANGE[1]))
            cells = found.pop(key, None)
            intents = sorted((k, c) for k, c in found.items() if rows.intent_commit(k) is not None)
        else:
            cells = self._table.get(key)
        if cells is None:
            fresh = {"owner": owner, "expires_at": expires, "data": "{}", "version": 1}
            if not self._table.write([Write("put", key, fresh, "EXPECT_NOT_EXIST")])[0]:
                return None
            held = _Held(owner, 1, {})
        else:
            current = rows.lease_from_cells(name, cells)
            version = int(cells.get("version", 0))
            if current.bars(owner, now):
                if current.from_a_clock_stepped_back(now, ttl_s):
                    self._table.write([cas(key, version, {"expires_at": expires, "version": version + 1})])
                return None
            take = {"owner": owner, "expires_at": expires, "version": version + 1}
            if not self._table.write([cas(key, version, take)])[0]:
                return None  # someone else took it between our read and our write
            held = _Held(owner, version + 1, current.data, rows.failed_keys(cells))
        self._held[name] = held
        if intents:
            self._recover(intents)
        return Lease(name, owner, expires, dict(held.data))

    def release_lease(self, lease: Lease, data: Mapping[str, Any] | None = None) -> None:
        """Free the lease if still ours; its data stays for the next holder, or becomes `data`.

        Releasing a channel's lease first moves its low-water mark past what was delivered.
        """
        channel = leased_channel(lease.name)
        if channel is not None and lease.name in self._held:
            self._outbox.settle(channel)
        held = self._held.pop(lease.name, None)
        change: dict[str, Any] = {"owner": "", "expires_at": 0.0}
        if held is not None and held.owner == lease.owner and held.unfinished:
            # Expired but still naming its owner: the next tick's first read sees a holder that stopped,
            # takes the lease and so finishes the commit (this process may not live to retry it).
            del change["owner"]
        if data is not None:
            change["data"] = json.dumps(data)
        self._table.write([_owned(lease, change)])

    def keep_lease_data(self, lease: Lease) -> None:
        """Store the lease's data if the lease is still ours (one conditional update)."""
        if not self._table.write([_owned(lease, {"data": json.dumps(lease.data)})])[0]:
            raise ConflictError(f"the {lease.name} lease is no longer held by this tick")
        held = self._held.get(lease.name)
        if held is not None and held.owner == lease.owner:
            held.version += 1
            held.data = dict(lease.data)

    def _check_lease(self, lease: Lease, cells: Cells | None, now: float) -> None:
        current = rows.lease_from_cells(lease.name, cells) if cells is not None else None
        if current is None or not current.held_by(lease.owner, now):
            raise ConflictError(f"the {lease.name} lease is no longer held by this tick")

    # -- commit ------------------------------------------------------------------------------
    def commit(
        self,
        lease: Lease,
        runs: Sequence[RunState],
        cursors: Sequence[ProjectCursor],
        messages: Sequence[OutboxMessage],
        now: float,
    ) -> None:
        """Store run states (version compare-and-set), cursors and new messages through an intent."""
        unique = _first_of_each_id(messages)
        lease_row = rows.lease_key(lease.name)
        cursor_rows = [rows.cursor_key(cursor.project_id) for cursor in cursors]
        if not runs and not unique:  # cursors alone need no intent: each row stands on its own
            known = self._table.get_many([lease_row, *cursor_rows])
            self._check_lease(lease, known.get(lease_row), now)
            self._check_cursors(cursors, known)
            self._table.write(
                [Write("put", rows.cursor_key(c.project_id), rows.cursor_cells(c)) for c in cursors]
            )
            return
        known = self._table.get_many(
            [
                lease_row,
                *cursor_rows,
                *(rows.run_row_key(key) for key in rows.run_keys(runs)),
                *(rows.message_id_key(message.id) for message in unique),
                *(rows.index_key(message.channel) for message in unique),
            ]
        )
        self._check_lease(lease, known.get(lease_row), now)
        self._check_cursors(cursors, known)
        for state, key in zip(runs, rows.run_keys(runs), strict=True):
            stored = known.get(rows.run_row_key(key))
            version = int(stored["version"]) if stored is not None else 0
            if version != state.version:
                raise ConflictError(f"run {key} changed since it was read (version {version})")
        new = [message for message in unique if rows.message_id_key(message.id) not in known]
        new = shift_seqs(new, rows.highest_seq(known.get(rows.index_key(m.channel)) for m in new))
        intent = Intent(uuid.uuid4().hex, lease.owner, now, list(runs), list(cursors), new)
        chunks = intent.chunks()
        try:
            self._table.write(
                [
                    Write(
                        "put",
                        rows.intent_key(intent.commit_id, index),
                        _chunk_cells(chunk, len(chunks), intent),
                    )
                    for index, chunk in enumerate(chunks)
                ]
            )
            lost = self._apply(intent, len(chunks), known)
        except BaseException:
            held = self._held.get(lease.name)
            if held is not None and held.owner == lease.owner:
                held.unfinished = True
            raise
        if lost:
            raise ConflictError(
                f"run(s) {', '.join(lost)} changed during the commit; their messages were dropped"
            )

    @staticmethod
    def _check_cursors(cursors: Sequence[ProjectCursor], known: dict[Key, Cells]) -> None:
        for cursor in cursors:
            cells = known.get(rows.cursor_key(cursor.project_id))
            check_cursor(
                cursor, rows.cursor_from_cells(rows.cursor_key(cursor.project_id), cells) if cells else None
            )

    def _apply(self, intent: Intent, chunks: int, known: dict[Key, Cells] | None = None) -> list[str]:
        """Write an intent's rows, idempotently; the keys of runs another writer changed first."""
        keys = rows.run_keys(intent.runs)
        writes = [_run_write(state, intent) for state in intent.runs]
        writes += [Write("put", rows.cursor_key(c.project_id), rows.cursor_cells(c)) for c in intent.cursors]
        results = self._table.write(writes) if writes else []
        refused = [key for key, ok in zip(keys, results, strict=False) if not ok]
        lost = self._not_ours(refused, intent) if refused else []
        messages = [m for m in intent.messages if m.run_key not in lost]
        if messages:
            self._outbox.add(messages, known)
        self._table.write([Write("delete", rows.intent_key(intent.commit_id, i)) for i in range(chunks)])
        return lost

    def _not_ours(self, refused: list[str], intent: Intent) -> list[str]:
        """Of runs whose conditional write was refused, those not already written by this intent."""
        expected = {
            key: state.version + 1 for key, state in zip(rows.run_keys(intent.runs), intent.runs, strict=True)
        }
        stored = self._table.get_many(rows.run_row_key(key) for key in refused)
        lost = []
        for key in refused:
            cells = stored.get(rows.run_row_key(key))
            if cells is None or cells.get("writer") != intent.commit_id or cells["version"] != expected[key]:
                lost.append(key)
        return lost

    def _recover(self, intents: list[tuple[Key, Cells]]) -> None:
        """Finish every commit whose intent is stored (a tick stopped mid-commit); drop partial intents."""
        groups: dict[str, list[tuple[Key, Cells]]] = {}
        for key, cells in intents:
            groups.setdefault(rows.intent_commit(key) or "", []).append((key, cells))
        for commit_id, parts in groups.items():
            if len(parts) != int(parts[0][1]["chunks"]):  # its writer stopped before it was whole
                self._table.write([Write("delete", key) for key, _ in parts])
                continue
            try:
                intent = Intent.decode(b"".join(bytes(cells["data"]) for _, cells in sorted(parts)))
            except UNREADABLE as error:
                # Kept, it would stop every tick at the tick lease. Dropped: runs it had not written
                # yet are diffed again from their old state (their messages queued anew); any it had
                # written lose the messages it carried, hence ERROR.
                reason = f"{type(error).__name__}: {error}"
                log.error("state: commit %s cannot be read and is dropped: %s", commit_id, reason)
                self._table.write([Write("delete", key) for key, _ in parts])
                continue
            log.warning("state: finishing commit %s left by tick %s", commit_id, intent.owner)
            lost = self._apply(intent, len(parts))
            if lost:
                log.warning("state: commit %s: runs %s had moved on; their messages dropped", commit_id, lost)

    # -- the outbox --------------------------------------------------------------------------
    def channels_with_pending(self) -> list[str]:
        """Channels whose low-water mark says something may be pending (one GetRange)."""
        return self._outbox.channels_with_pending()

    def pending_messages(self, channel: str) -> list[OutboxMessage]:
        """A channel's pending messages in delivery order: a GetRange from its low-water mark."""
        return self._outbox.pending(channel)

    def update_messages(self, lease: Lease, messages: Sequence[OutboxMessage]) -> None:
        """Store the lease data (if the lease is still ours), then the messages' delivery status."""
        held = self._held.get(lease.name)
        held = held if held is not None and held.owner == lease.owner else None
        change: dict[str, Any] = {"data": json.dumps(lease.data)}
        failed = [message for message in messages if message.status == FAILED]
        if failed:
            known = (
                held.failed
                if held is not None
                else rows.failed_keys(self._table.get(rows.lease_key(lease.name)))
            )
            change["failed"] = rows.remember_failed(known, failed)
        if not self._table.write([_owned(lease, change)])[0]:
            raise ConflictError(f"the {lease.name} lease is no longer held by this tick")
        if held is not None:
            held.version += 1
            held.data = dict(lease.data)
            held.failed = rows.failed_keys(change) if failed else held.failed
        self._outbox.update(messages)

    def runs_updated_since(self, since: float, limit: int = 10_000) -> list[tuple[RunState, float]]:
        """Run states stored or changed at or after `since`: one GetRange over the run rows (paged),
        which retention bounds; meant for once a day (a digest), not for every tick."""
        found = [
            (rows.run_from_cells(key, cells), float(cells.get("updated_at", 0.0)))
            for key, cells in self._table.scan("run/", pk_to="run0")
            if float(cells.get("updated_at", 0.0)) >= since
        ]
        return sorted(found, key=lambda pair: pair[1], reverse=True)[:limit]

    # -- living messages ---------------------------------------------------------------------
    def load_living(self, channel: str, run_keys: Collection[str]) -> dict[str, LivingMessage]:
        """The living messages of these runs on `channel` (one BatchGetRow per 100)."""
        found = self._table.get_many(rows.living_key(channel, key) for key in run_keys)
        return {key[1]: rows.living_from_cells(key, cells) for key, cells in found.items()}

    def store_living(self, living: LivingMessage, now: float) -> LivingMessage:
        """Store a living message at its next version: one write, conditional on the stored version."""
        stored = replace(living, version=living.version + 1)
        key = rows.living_key(living.channel, living.run_key)
        if not self._versioned_write(key, stored.to_data(), living.version, now):
            raise ConflictError(f"the living message of run {living.run_key} on {living.channel} changed")
        return stored

    # -- decisions taken from chat ------------------------------------------------------------
    def load_action(self, key: str) -> ActionRecord | None:
        """The decision recorded for `key`, if any (one GetRow)."""
        cells = self._table.get(rows.action_key(key))
        return None if cells is None else ActionRecord.from_data(key, int(cells["version"]), cells["data"])

    def store_action(self, record: ActionRecord, now: float) -> ActionRecord:
        """Store a decision at its next version: one write, conditional on the row not existing (version
        0) or on the stored version."""
        stored = replace(record, version=record.version + 1)
        if not self._versioned_write(rows.action_key(record.key), stored.to_data(), record.version, now):
            raise ConflictError(f"the decision {record.key} was recorded by another request")
        return stored

    def _versioned_write(self, key: Key, data: Mapping[str, Any], version: int, now: float) -> bool:
        """One write of a record's row at `version + 1`, conditional on there being none (`version`
        0) or on the stored version; whether it was written (compare-and-set)."""
        cells = {"data": json.dumps(dict(data)), "version": version + 1, "updated_at": float(now)}
        if version == 0:
            write = Write("put", key, cells, "EXPECT_NOT_EXIST")
        else:
            write = Write("put", key, cells, "EXPECT_EXIST", equals=(("version", version),))
        return self._table.write([write])[0]

    # -- status ------------------------------------------------------------------------------
    def report(self, limit: int = 200) -> StatusReport:
        """Runs still moving (a filtered scan of the run rows), then pending and failed messages.

        Messages: each channel's rows from its low-water mark, plus the failed ones its lease row
        remembers (the newest 100 per channel; older failures are only in the logs).
        """
        found = self._table.scan("run/", pk_to="run0", where=("final", (False,)), limit=limit)
        runs = sorted((rows.run_from_cells(key, cells) for key, cells in found), key=lambda s: s.key)
        remembered = [
            (rows.outbox_partition(channel), sk)
            for key, cells in self._table.scan("lease")
            if (channel := leased_channel(key[1])) is not None
            for sk in rows.failed_keys(cells)
        ]
        messages = self._outbox.listed(remembered)
        return StatusReport(runs=tuple(runs[:limit]), messages=tuple(messages[:limit]))

    def close(self) -> None:
        """Drop the client's pooled connections."""
        self._table.close()


def _cursors_of(found: dict[Key, Cells]) -> dict[int, ProjectCursor]:
    cursors = (rows.cursor_from_cells(row, cells) for row, cells in found.items())
    return {cursor.project_id: cursor for cursor in cursors if cursor is not None}


def _owned(lease: Lease, cells: dict[str, Any]) -> Write:
    """An update of a lease row that applies only while `lease.owner` holds it; bumps its version."""
    return Write(
        "update", rows.lease_key(lease.name), cells, "EXPECT_EXIST", (("owner", lease.owner),), ("version",)
    )


def _run_write(state: RunState, intent: Intent) -> Write:
    key = rows.run_row_key(run_key(state.project_id, state.run_id))
    cells = rows.run_cells(state, state.version + 1, intent.now, intent.commit_id)
    if state.version == 0:
        return Write("put", key, cells, "EXPECT_NOT_EXIST")
    return Write("put", key, cells, "EXPECT_EXIST", equals=(("version", state.version),))


def _first_of_each_id(messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
    seen: set[str] = set()
    unique = []
    for message in messages:
        if message.id not in seen:
            seen.add(message.id)
            unique.append(message)
    return unique


def _chunk_cells(chunk: bytes, count: int, intent: Intent) -> dict[str, Any]:
    return {"data": chunk, "chunks": count, "owner": intent.owner, "created_at": float(intent.now)}
