"""How the Tablestore state store lays records out as rows of one table: keys, columns, intents.

Pure: no SDK, no I/O. Every row has the primary key (`pk`, `sk`), both strings:

    pk                  sk                         columns
    run/<project_id>    <run_id>                   status, final, data, version, updated_at, writer
    cursor              <project_id>               data
    lease               <name>                     owner, expires_at, data, version, failed
    lease               tick/intent/<commit>/<chunk:04d>   data (binary JSON), chunks, owner, created_at
    outbox/<channel>    <seq:020d>/<message id>    id, status, next_attempt_at, created_at, finished_at, data
    msgid               <message id>               channel, seq
    outbox-index        <channel>                  mark, version, top
    living/<channel>    <run key>                  data, version, updated_at
    action              <project>/<run>/<stage>/<action>   data, version, updated_at

Intents sit next to the tick lease, so the read that takes the tick lease also finds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StateError
from ..model import RunState, run_key
from .base import (
    PENDING,
    TICK_LEASE,
    UNREADABLE,
    Lease,
    LivingMessage,
    OutboxMessage,
    ProjectCursor,
    message_data,
    read_cursor,
    read_lease_data,
    read_message,
    read_run,
    run_data,
    run_from_data,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]
Value = str | int | float | bool | bytes | bytearray
Cells = dict[str, Any]

# The low-water mark of a channel with nothing pending: above every seq.
IDLE = 2**63 - 1
INTENT_CHUNK_BYTES = 1_500_000
INTENT_PREFIX = f"{TICK_LEASE}/intent/"
TICK_RANGE = (TICK_LEASE, f"{TICK_LEASE}0")  # the tick lease row and its intents ('0' follows '/')
FAILED_KEPT = 100  # failed messages a channel's lease row remembers for `status`


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- runs ----------------------------------------------------------------------------------------
def run_row_key(key: str) -> Key:
    """The row of a run key `<project_id>/<run_id>`."""
    project, _, run_id = key.partition("/")
    if not run_id:
        raise StateError(f"not a run key: {key!r}")
    return (f"run/{project}", run_id)


def run_cells(state: RunState, version: int, now: float, writer: str) -> Cells:
    """The columns of a run's row at `version`."""
    return {
        "status": state.status,
        "final": state.final,
        "data": _dumps(run_data(state)),
        "version": version,
        "updated_at": float(now),
        "writer": writer,
    }


def run_from_cells(key: Key, cells: Mapping[str, Any]) -> RunState:
    """The RunState a run row holds (see `read_run` for a row whose data is unreadable)."""
    project_id = int(key[0].removeprefix("run/"))
    return read_run(project_id, key[1], str(cells["status"]), int(cells["version"]), cells.get("data", ""))


# -- cursors -------------------------------------------------------------------------------------
def cursor_key(project_id: int) -> Key:
    """The row of a workspace's cursor."""
    return ("cursor", str(project_id))


def cursor_cells(cursor: ProjectCursor) -> Cells:
    """The columns of a cursor row."""
    return {"data": _dumps(cursor.stored_data())}


def cursor_from_cells(key: Key, cells: Mapping[str, Any]) -> ProjectCursor | None:
    """The cursor a cursor row holds; None when it is unreadable."""
    return read_cursor(int(key[1]), cells.get("data", ""))


# -- leases --------------------------------------------------------------------------------------
def lease_key(name: str) -> Key:
    """The row of a lease."""
    return ("lease", name)


def lease_from_cells(name: str, cells: Mapping[str, Any]) -> Lease:
    """The lease a lease row holds (owner '' when free)."""
    return Lease(
        name=name,
        owner=str(cells.get("owner", "")),
        expires_at=float(cells.get("expires_at", 0.0)),
        data=read_lease_data(name, cells.get("data")),
    )


def failed_keys(cells: Mapping[str, Any] | None) -> list[str]:
    """The outbox keys of the failed messages a channel's lease row remembers."""
    if not cells or not cells.get("failed"):
        return []
    try:
        keys = json.loads(cells["failed"])
        if not isinstance(keys, list):
            raise TypeError(f"not a JSON list: {type(keys).__name__}")
    except UNREADABLE as error:
        log.warning(
            "state: a lease's list of failed messages cannot be read, %s: %s", type(error).__name__, error
        )
        return []
    return [str(key) for key in keys]


def remember_failed(known: Sequence[str], messages: Sequence[OutboxMessage]) -> str:
    """The lease row's `failed` column after `messages` failed: the newest FAILED_KEPT keys."""
    keys = set(known) | {outbox_sk(m.seq, m.id) for m in messages}
    return _dumps(sorted(keys)[-FAILED_KEPT:])


# -- the outbox ----------------------------------------------------------------------------------
def outbox_sk(seq: int, message_id: str) -> str:
    """The sort key of a message: its seq, zero-padded so that text order is delivery order."""
    if seq < 0:
        raise StateError(f"message {message_id}: seq must not be negative ({seq})")
    return f"{seq:020d}/{message_id}"


def outbox_partition(channel: str) -> str:
    """The partition of a channel's message rows."""
    return f"outbox/{channel}"


def outbox_key(message: OutboxMessage) -> Key:
    """The row of a message."""
    return (outbox_partition(message.channel), outbox_sk(message.seq, message.id))


def message_cells(message: OutboxMessage) -> Cells:
    """The columns of a message row (`finished_at` absent while unfinished)."""
    cells: Cells = {
        "id": message.id,
        "status": message.status,
        "next_attempt_at": float(message.next_attempt_at),
        "created_at": float(message.created_at),
        "data": _dumps(message_data(message)),
    }
    if message.finished_at is not None:
        cells["finished_at"] = float(message.finished_at)
    return cells


def message_from_cells(key: Key, cells: Mapping[str, Any]) -> OutboxMessage:
    """The message a message row holds (see `read_message` for a row whose data is unreadable)."""
    finished = cells.get("finished_at")
    seq, _, message_id = key[1].partition("/")
    columns = {
        "id": str(cells.get("id", message_id)),
        "channel": key[0].removeprefix(outbox_partition("")),
        "seq": int(seq),
        "status": str(cells.get("status", PENDING)),
        "next_attempt_at": float(cells.get("next_attempt_at", 0.0)),
        "created_at": float(cells.get("created_at", 0.0)),
        "finished_at": None if finished is None else float(finished),
    }
    return read_message(columns, cells.get("data", ""))


def highest_seq(index_rows: Iterable[Cells | None]) -> int | None:
    """The highest seq these channels' index rows say was ever stored (None when none says)."""
    tops = [int(cells["top"]) for cells in index_rows if cells is not None and "top" in cells]
    return max(tops, default=None)


def message_id_key(message_id: str) -> Key:
    """The row that says a message id exists (so it is never queued twice)."""
    return ("msgid", message_id)


def living_key(channel: str, run_key: str) -> Key:
    """The row of a run's living message on a channel."""
    return (f"living/{channel}", run_key)


def living_from_cells(key: Key, cells: Mapping[str, Any]) -> LivingMessage:
    """The living message a row holds."""
    return LivingMessage.from_data(
        key[0].removeprefix("living/"), key[1], int(cells["version"]), cells["data"]
    )


def action_key(key: str) -> Key:
    """The row of the decision taken on a (run, stage, action) from chat."""
    return ("action", key)


def index_key(channel: str) -> Key:
    """The row of a channel's low-water mark."""
    return ("outbox-index", channel)


# -- intents -------------------------------------------------------------------------------------
@dataclass
class Intent:
    """Everything one commit writes, stored before it is applied so a crashed commit can be finished.

    `runs` rows carry the version expected before the write; `messages` are full message records.
    """

    commit_id: str
    owner: str
    now: float
    runs: list[RunState] = field(default_factory=list)
    cursors: list[ProjectCursor] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)

    def encode(self) -> bytes:
        """The intent as UTF-8 JSON."""
        body = {
            "commit_id": self.commit_id,
            "owner": self.owner,
            "now": self.now,
            "runs": [_run_record(state) for state in self.runs],
            "cursors": [{"project_id": c.project_id, **c.to_data()} for c in self.cursors],
            "messages": [_message_record(m) for m in self.messages],
        }
        return _dumps(body).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> Intent:
        """An intent from its UTF-8 JSON."""
        body = json.loads(raw.decode("utf-8"))
        return cls(
            commit_id=body["commit_id"],
            owner=body["owner"],
            now=float(body["now"]),
            runs=[_run_from_record(r) for r in body["runs"]],
            cursors=[ProjectCursor.from_data(c["project_id"], c) for c in body["cursors"]],
            messages=[_message_from_record(m) for m in body["messages"]],
        )

    def chunks(self, limit: int = INTENT_CHUNK_BYTES) -> list[bytes]:
        """The encoded intent cut into pieces of at most `limit` bytes (one row each)."""
        raw = self.encode()
        return [raw[start : start + limit] for start in range(0, len(raw), limit)] or [b""]


def intent_key(commit_id: str, chunk: int) -> Key:
    """The row of one chunk of an intent."""
    return ("lease", f"{INTENT_PREFIX}{commit_id}/{chunk:04d}")


def intent_commit(key: Key) -> str | None:
    """The commit id of an intent row, None for any other row."""
    if not key[1].startswith(INTENT_PREFIX):
        return None
    return key[1].removeprefix(INTENT_PREFIX).rsplit("/", 1)[0]


def _run_record(state: RunState) -> dict[str, Any]:
    key = {"project_id": state.project_id, "run_id": state.run_id}
    return {**key, "status": state.status, "version": state.version, **run_data(state)}


def _run_from_record(record: Mapping[str, Any]) -> RunState:
    return run_from_data(record["project_id"], record["run_id"], record["status"], record["version"], record)


def _message_record(message: OutboxMessage) -> dict[str, Any]:
    record = {name: getattr(message, name) for name in OutboxMessage.__dataclass_fields__}
    record["event_types"] = list(message.event_types)
    return record


def _message_from_record(record: Mapping[str, Any]) -> OutboxMessage:
    return OutboxMessage(**{**record, "event_types": tuple(record["event_types"])})


def run_keys(states: Sequence[RunState]) -> list[str]:
    """The run keys of these states, in order."""
    return [run_key(state.project_id, state.run_id) for state in states]
