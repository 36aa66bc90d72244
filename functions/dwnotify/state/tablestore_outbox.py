"""The Tablestore outbox: message rows in seq order per channel, and each channel's low-water mark.

Sent and failed rows stay until their TTL (a message id is never queued twice), so reads start at
the channel's mark: the lowest seq that may still be pending (IDLE when none is). The mark only
moves up by a compare-and-set on the index row's version, read before the rows were scanned; a
commit bumps that version after its messages are stored (lowering the mark if needed), so the mark
never passes a message that a reader could not see yet. A stale mark only costs reading more rows.
The index row also keeps `top`, the highest seq ever stored for the channel: a commit moves its new
seqs above it (an index row written before `top` existed gains it with the next commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StateError
from . import tablestore_rows as rows
from .base import FAILED, PENDING, OutboxMessage
from .tablestore_client import Table, Write
from .tablestore_rows import IDLE, Cells, Key

log = logging.getLogger(__name__)

MARK_ATTEMPTS = 5


@dataclass
class _Reading:
    """A channel's mark and index version as last read, and the pending messages read from it."""

    mark: int
    version: int
    pending: dict[str, int] = field(default_factory=dict)  # message id -> seq


# How often an outbox status update refused on its condition is written again, in all.
UPDATE_ATTEMPTS = 3


class Outbox:
    """Message rows and low-water marks on one table."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._marks: dict[str, tuple[int, int]] = {}  # channel -> (mark, version) from channels_with_pending
        self._readings: dict[str, _Reading] = {}

    def channels_with_pending(self) -> list[str]:
        """Channels whose mark says something may be pending (one GetRange over the index rows)."""
        self._marks = {
            key[1]: (int(cells["mark"]), int(cells["version"]))
            for key, cells in self._table.scan(rows.index_key("")[0])
        }
        return sorted(channel for channel, (mark, _) in self._marks.items() if mark < IDLE)

    def pending(self, channel: str) -> list[OutboxMessage]:
        """A channel's pending messages in seq order; moves the mark up to the lowest (best effort)."""
        mark_version = self._marks.pop(channel, None)  # fresh from channels_with_pending: used once
        if mark_version is None:
            cells = self._table.get(rows.index_key(channel))
            if cells is None:
                return []
            mark_version = (int(cells["mark"]), int(cells["version"]))
        reading = _Reading(*mark_version)
        if reading.mark >= IDLE:
            return []
        found = self._table.scan(
            rows.outbox_partition(channel), f"{reading.mark:020d}", where=("status", (PENDING,))
        )
        messages = [rows.message_from_cells(key, cells) for key, cells in found]
        reading.pending = {message.id: message.seq for message in messages}
        self._readings[channel] = reading
        self._raise_mark(channel, reading)
        return messages

    def update(self, messages: Sequence[OutboxMessage]) -> None:
        """Store messages' delivery status (only rows that exist: a message is never created here).

        The rows exist, so a refused condition is the service's: the refused rows are written again,
        up to UPDATE_ATTEMPTS times in all. A row still refused stays as it was (pending: its message
        may go out once more) and keeps the channel's mark below it, so it is never skipped.
        """
        refused = list(messages)
        for _ in range(UPDATE_ATTEMPTS):
            if not refused:
                break
            written = self._table.write(
                [Write("put", rows.outbox_key(m), rows.message_cells(m), "EXPECT_EXIST") for m in refused]
            )
            refused = [message for message, ok in zip(refused, written, strict=True) if not ok]
        if refused:
            log.warning(
                "state: Tablestore refused %d outbox update(s) %d times; left pending",
                len(refused),
                UPDATE_ATTEMPTS,
            )
        left = {message.id for message in refused}
        for message in messages:
            reading = self._readings.get(message.channel)
            if reading is not None and message.status != PENDING and message.id not in left:
                reading.pending.pop(message.id, None)

    def settle(self, channel: str) -> None:
        """After a delivery pass: move the mark past what was delivered, so the next tick skips it."""
        reading = self._readings.pop(channel, None)
        if reading is not None:
            self._raise_mark(channel, reading)

    def _raise_mark(self, channel: str, reading: _Reading) -> None:
        lowest = min(reading.pending.values(), default=IDLE)
        if lowest <= reading.mark:
            return
        change = {"mark": lowest, "version": reading.version + 1}
        if self._table.write([cas(rows.index_key(channel), reading.version, change)])[0]:
            reading.mark, reading.version = lowest, reading.version + 1
        else:
            self._readings.pop(channel, None)  # the index moved on: leave it to the next reader

    def add(self, messages: Sequence[OutboxMessage], known: dict[Key, Cells] | None) -> None:
        """Store new messages (an existing row is left as it is), then lower and bump their marks."""
        self._table.write(
            [Write("put", rows.outbox_key(m), rows.message_cells(m), "EXPECT_NOT_EXIST") for m in messages]
            + [
                Write(
                    "put", rows.message_id_key(m.id), {"channel": m.channel, "seq": m.seq}, "EXPECT_NOT_EXIST"
                )
                for m in messages
            ]
        )  # a refused put means the row is there already (a repeated apply): fine
        seqs: dict[str, tuple[int, int]] = {}
        for message in messages:
            low, high = seqs.get(message.channel, (message.seq, message.seq))
            seqs[message.channel] = (min(low, message.seq), max(high, message.seq))
        self._lower_marks(seqs, known)

    def _lower_marks(self, seqs: dict[str, tuple[int, int]], known: dict[Key, Cells] | None) -> None:
        """Each channel's mark at most its lowest new seq and its top at least its highest, version bumped."""
        remaining = dict(seqs)
        for attempt in range(MARK_ATTEMPTS):
            if attempt or known is None:
                known = self._table.get_many(rows.index_key(channel) for channel in remaining)
            writes = []
            for channel, (low, high) in remaining.items():
                key = rows.index_key(channel)
                self._marks.pop(channel, None)
                self._readings.pop(channel, None)
                cells = known.get(key)
                if cells is None:
                    fresh = {"mark": low, "version": 1, "top": high}
                    writes.append(Write("put", key, fresh, "EXPECT_NOT_EXIST"))
                else:
                    version = int(cells["version"])
                    top = max(int(cells.get("top", high)), high)
                    change = {"mark": min(int(cells["mark"]), low), "version": version + 1, "top": top}
                    writes.append(cas(key, version, change))
            results = self._table.write(writes)
            remaining = {c: s for (c, s), ok in zip(remaining.items(), results, strict=True) if not ok}
            if not remaining:
                return
        raise StateError(f"could not update the outbox index of {', '.join(sorted(remaining))}")

    def listed(self, remembered: Iterable[Key]) -> list[OutboxMessage]:
        """Pending and failed messages: every channel's rows from its mark, plus `remembered` rows."""
        found: dict[Key, OutboxMessage] = {}
        for key, cells in self._table.scan(rows.index_key("")[0]):
            mark = int(cells["mark"])
            if mark < IDLE:
                scanned = self._table.scan(
                    rows.outbox_partition(key[1]), f"{mark:020d}", where=("status", (PENDING, FAILED))
                )
                found.update((row, rows.message_from_cells(row, c)) for row, c in scanned)
        for row, cells in self._table.get_many(remembered).items():
            found.setdefault(row, rows.message_from_cells(row, cells))
        listed = (m for m in found.values() if m.status in (PENDING, FAILED))
        return sorted(listed, key=lambda m: (m.channel, m.seq, m.id))


def cas(key: Key, version: int, cells: Mapping[str, Any]) -> Write:
    """An update that applies only while the row's version is still `version`."""
    return Write("update", key, cells, "EXPECT_EXIST", equals=(("version", version),))
