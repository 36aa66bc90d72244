"""The StateStore Protocol and the records it keeps. Every backend passes one shared test suite.

A store keeps five kinds of record:
- run states: the last seen statuses of each run and the keys of the events already announced;
- project cursors: per workspace, the run count at the last listing and the runs still moving;
- the outbox: rendered messages waiting for (or done with) delivery, ordered per channel;
- leases: short-lived claims (the tick's discovery lease, one per channel being delivered to),
  each with a small JSON payload (a channel's rate budget);
- living messages: per channel and run, the chat message that a channel able to edit keeps current
  (its id in the service, and whether a post of it was started and not yet recorded).

Concurrency rules every backend keeps: `commit` is atomic and applies only while the caller still
holds the tick lease; run states are compare-and-set on their version; a lease is taken only when it
is free or expired, so a killed tick's claims come back after their TTL.

Clocks step back (an NTP correction, a host moved): what a backend stores must not make the order or
the waits depend on the clock never doing so. A commit gives its new messages seqs above every seq the
store gave before (`shift_seqs`), and a lease that claims to last far longer than any holder sets is cut.

A record that cannot be read (a hand-edited or damaged row) is logged at WARNING and read as well as
it can be, never raised: a run as a state knowing only its status and version (so the next commit
overwrites it instead of conflicting forever), a cursor as absent, a lease's data as empty, a message
as one marked `unreadable`, which delivery gives up with that reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from ..errors import ConflictError
from ..model import RunItem, RunState

log = logging.getLogger(__name__)

PENDING = "pending"
SENT = "sent"
FAILED = "failed"

TICK_LEASE = "tick"
_CHANNEL_LEASE = "channel:"


def channel_lease(channel: str) -> str:
    """The name of the lease a delivery pass holds while it sends to `channel`."""
    return f"{_CHANNEL_LEASE}{channel}"


def leased_channel(lease_name: str) -> str | None:
    """The channel a lease is for, or None for another lease (the tick's)."""
    return lease_name.removeprefix(_CHANNEL_LEASE) if lease_name.startswith(_CHANNEL_LEASE) else None


@dataclass(frozen=True)
class ProjectCursor:
    """Where discovery stood in one workspace after the last tick.

    `watched_since` is when dwnotify first listed the workspace: a run created after it (less the
    lookback) that was never stored is news whenever it turns up, however late.

    `fingerprints` holds, for every run of the last listing whose state is stored, the fingerprint of
    that state (`model.fingerprint`): a run listed again with the same fingerprint has not changed, so
    its stored state need not be read. None for a cursor stored before fingerprints existed (every
    listed run is then read, as it was). `version` is the stored row's (0: none stored); a commit
    writes the cursor only while it is still that version, so a slower tick cannot put back an older one.
    """

    project_id: int
    total_count: int
    listed_at: float
    active_run_ids: tuple[str, ...] = ()
    watched_since: float | None = None
    fingerprints: Mapping[str, str] | None = None
    version: int = 0
    reminders: Mapping[str, float] = field(default_factory=dict)  # run id -> when a reminder falls due

    def to_data(self) -> dict[str, Any]:
        """The cursor as plain JSON-able data (without its project id, the record's key)."""
        data: dict[str, Any] = {
            "total_count": self.total_count,
            "listed_at": self.listed_at,
            "active_run_ids": list(self.active_run_ids),
            "watched_since": self.watched_since,
            "version": self.version,
        }
        if self.fingerprints is not None:
            data["fingerprints"] = dict(self.fingerprints)
        if self.reminders:
            data["reminders"] = dict(self.reminders)
        return data

    def stored_data(self) -> dict[str, Any]:
        """What a commit writes: the data at the next version."""
        return {**self.to_data(), "version": self.version + 1}

    def same_listing(self, other: ProjectCursor) -> bool:
        """Whether `other` says what this one says about the workspace (a write would change nothing).

        Keeping the older `listed_at` only widens the window in which unseen runs count as new.
        """
        return (self.total_count, self.active_run_ids, self.fingerprints, self.reminders) == (
            other.total_count,
            other.active_run_ids,
            other.fingerprints,
            other.reminders,
        )

    @classmethod
    def from_data(cls, project_id: int, data: Mapping[str, Any]) -> ProjectCursor:
        """The cursor `to_data` wrote (a cursor stored before `watched_since` existed: its listing)."""
        listed_at = float(data["listed_at"])
        since = data.get("watched_since")
        prints = data.get("fingerprints")
        return cls(
            project_id=int(project_id),
            total_count=int(data["total_count"]),
            listed_at=listed_at,
            active_run_ids=tuple(data["active_run_ids"]),
            watched_since=float(since) if since is not None else listed_at,
            fingerprints={str(k): str(v) for k, v in prints.items()} if prints is not None else None,
            version=int(data.get("version", 0)),
            reminders={str(k): float(v) for k, v in (data.get("reminders") or {}).items()},
        )


def check_cursor(cursor: ProjectCursor, stored: ProjectCursor | None) -> None:
    """Raise ConflictError unless the stored cursor is still the version `cursor` was made from."""
    version = stored.version if stored is not None else 0
    if version != cursor.version:
        raise ConflictError(f"the cursor of workspace {cursor.project_id} changed since it was read")


@dataclass(frozen=True)
class TickStart:
    """What a tick reads before it calls DataWorks: the cursors and the tick lease as stored."""

    cursors: dict[int, ProjectCursor]
    tick_lease: Lease | None = None

    def busy(self, owner: str, now: float) -> bool:
        """Whether another tick holds the tick lease (it is committing, or polling in a loop)."""
        return self.tick_lease is not None and self.tick_lease.bars(owner, now)


@dataclass(frozen=True)
class OutboxMessage:
    """A rendered message for one channel, and how its delivery stands."""

    id: str
    channel: str
    run_key: str
    rule: str
    seq: int
    title: str
    text: str
    created_at: float
    blocks_json: str | None = None
    event_types: tuple[str, ...] = ()
    mentions_json: str | None = None  # the people the text mentions, as JSON (`outbox.record`)
    reply: str | None = None  # a living message's thread reply (Slack app channels)
    held_until: float | None = None  # quiet hours: not sent before then, then merged with the others held
    status: str = PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    finished_at: float | None = None
    unreadable: str = ""  # why the stored record could not be read; empty when it was

    def due(self, now: float) -> bool:
        """Whether its next attempt may be made at `now`."""
        return self.next_attempt_at <= now

    def expired(self, now: float, max_age_s: float) -> bool:
        """Whether it can no longer be sent: older than `max_age_s`, or unreadable."""
        return bool(self.unreadable) or now - self.created_at > max_age_s


@dataclass(frozen=True)
class Lease:
    """A claim on a name (the tick, or one channel) held by one owner until `expires_at`."""

    name: str
    owner: str
    expires_at: float
    data: dict[str, Any] = field(default_factory=dict)

    def held_by(self, owner: str, now: float | None = None) -> bool:
        """Whether `owner` holds it (at `now`, when given: not yet expired)."""
        return self.owner == owner and (now is None or self.expires_at > now)

    def bars(self, owner: str, now: float) -> bool:
        """Whether it stops `owner` from taking it at `now`: someone else holds it, unexpired."""
        return self.owner not in ("", owner) and self.expires_at > now

    def from_a_clock_stepped_back(self, now: float, ttl_s: float) -> bool:
        """Whether it ends further ahead than a `ttl_s` lease taken now could: taken on a clock that
        has gone back since, so it is cut to `ttl_s` from now rather than waited out."""
        return self.expires_at > now + 2 * ttl_s


@dataclass(frozen=True)
class LivingMessage:
    """The one chat message a run has on a channel that edits its messages (a Slack app channel).

    `ts` and `channel_id` are the service's ids of the message ("" until its post was recorded).
    `posting_since` is set, before a post is sent, to when it was started, and cleared once its id is
    stored: a record that still has it after a crash may have a message in the chat that no one
    recorded, which must be looked for before posting again. Writes are compare-and-set on `version`
    (0: none stored).
    """

    channel: str
    run_key: str
    ts: str = ""
    channel_id: str = ""
    posting_since: float | None = None
    version: int = 0

    @property
    def posted(self) -> bool:
        """Whether the message's id is known: later changes edit it."""
        return bool(self.ts)

    def to_data(self) -> dict[str, Any]:
        """What a backend keeps beyond the key and version, as JSON-able data."""
        return {"ts": self.ts, "channel_id": self.channel_id, "posting_since": self.posting_since}

    @classmethod
    def from_data(cls, channel: str, run_key: str, version: int, raw: str | bytes) -> LivingMessage:
        """The record `to_data` wrote; a damaged one reads as a post started at an unknown time
        (so the chat is searched before anything is posted again)."""
        try:
            data = json.loads(raw)
            since = data.get("posting_since")
            return cls(
                channel,
                run_key,
                str(data.get("ts") or ""),
                str(data.get("channel_id") or ""),
                float(since) if since is not None else None,
                int(version),
            )
        except UNREADABLE as error:
            _warn_unreadable(f"the living message of run {run_key} on {channel}", error)
            return cls(channel, run_key, posting_since=0.0, version=int(version))


ACTION_FAILED = "failed"  # an ActionRecord's result when DataWorks did not carry the action out


@dataclass(frozen=True)
class ActionRecord:
    """The one decision taken on a (run, stage, action) from chat: who clicked, and what came of it.

    Stored with a conditional write before DataWorks is called (`version` 0: none stored, so the
    write succeeds only where there is no record), so that a second click, a retry or a replay finds
    it and does nothing. `result` is `claimed` until the work starts, `calling` while DataWorks is
    called (a retried invocation that finds it does nothing), then `done`, `refused` (the run had
    moved on), `unknown` (the call's answer was lost: the next poll shows what happened) or `failed`
    (DataWorks did not carry it out, so the click may be tried again).
    """

    key: str
    user_id: str = ""
    person: str = ""
    at: float = 0.0
    result: str = "claimed"
    detail: str = ""
    request_id: str = ""
    click_json: str = ""  # what was clicked and where (`dwnotify.acting`): the deferred work's input
    version: int = 0

    @property
    def final(self) -> bool:
        """Whether nothing more may come of this decision (a `failed` one may be claimed again)."""
        return self.result != ACTION_FAILED

    def to_data(self) -> dict[str, Any]:
        """What a backend keeps beyond the key and version, as JSON-able data."""
        return {
            "user_id": self.user_id,
            "person": self.person,
            "at": self.at,
            "result": self.result,
            "detail": self.detail,
            "request_id": self.request_id,
            "click": self.click_json,
        }

    @classmethod
    def from_data(cls, key: str, version: int, raw: str | bytes) -> ActionRecord:
        """The record `to_data` wrote; a damaged one reads as a decision taken (nothing is done twice)."""
        try:
            data = json.loads(raw)
            return cls(
                key,
                str(data.get("user_id") or ""),
                str(data.get("person") or ""),
                float(data.get("at") or 0.0),
                str(data.get("result") or "unknown"),
                str(data.get("detail") or ""),
                str(data.get("request_id") or ""),
                str(data.get("click") or ""),
                int(version),
            )
        except UNREADABLE as error:
            _warn_unreadable(f"the action record {key}", error)
            return cls(key, result="unknown", version=int(version))


# Both backends keep these fields of a message as one JSON blob; the rest are columns they query.
MESSAGE_DATA_FIELDS = (
    "run_key",
    "rule",
    "title",
    "text",
    "blocks_json",
    "event_types",
    "mentions_json",
    "reply",
    "held_until",
    "attempts",
    "last_error",
)


def run_data(state: RunState) -> dict[str, Any]:
    """What a run state keeps beyond its key, status and version, as JSON-able data."""
    return {
        "stages": state.stage_statuses,
        "announced": sorted(state.announced),
        "create_time_ms": state.create_time_ms,
        "stage_since": dict(state.stage_since),
        "stage_started": dict(state.stage_started),
        "items": [asdict(item) for item in state.items],
        "description": state.description,
        "message": state.message,
        "finished_ms": state.finished_ms,
        "silent": state.silent,
    }


def run_from_data(
    project_id: int, run_id: str, status: str, version: int, data: Mapping[str, Any]
) -> RunState:
    """The run state `run_data` (plus its key, status and version) describes."""
    return RunState(
        project_id=int(project_id),
        run_id=run_id,
        status=status,
        stage_statuses=dict(data["stages"]),
        announced=frozenset(data["announced"]),
        create_time_ms=data.get("create_time_ms"),
        version=int(version),
        stage_since={str(k): float(v) for k, v in data.get("stage_since", {}).items()},
        stage_started={str(k): float(v) for k, v in data.get("stage_started", {}).items()},
        items=tuple(RunItem(**item) for item in data.get("items", ())),
        description=str(data.get("description") or ""),
        message=str(data.get("message") or ""),
        finished_ms=data.get("finished_ms"),
        silent=bool(data.get("silent", False)),
    )


def message_data(message: OutboxMessage) -> dict[str, Any]:
    """The blob part of a message (`MESSAGE_DATA_FIELDS`), as JSON-able data."""
    data = {name: getattr(message, name) for name in MESSAGE_DATA_FIELDS}
    data["event_types"] = list(message.event_types)
    return data


def message_from_data(columns: Mapping[str, Any], data: Mapping[str, Any]) -> OutboxMessage:
    """The message made of its queried columns and its `message_data` blob (unknown keys ignored)."""
    blob = {name: data[name] for name in MESSAGE_DATA_FIELDS if name in data}
    blob["event_types"] = tuple(data.get("event_types", ()))
    return OutboxMessage(**columns, **blob)


# What reading a damaged record can raise: bad JSON, a missing key, a value of the wrong type.
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def _warn_unreadable(what: str, error: BaseException) -> str:
    reason = f"{type(error).__name__}: {error}"
    log.warning("state: %s cannot be read, %s", what, reason)
    return reason


def read_run(project_id: int, run_id: str, status: str, version: int, raw: str | bytes) -> RunState:
    """The run state a row holds; if its data is unreadable, one that knows only status and version.

    Such a run is diffed as if its stages were all `init`: its stage events may be announced once
    more, and the commit that follows overwrites the row (its version is kept for the compare-and-set).
    """
    try:
        return run_from_data(project_id, run_id, status, version, json.loads(raw))
    except UNREADABLE as error:
        _warn_unreadable(f"run {project_id}/{run_id}", error)
        return RunState(int(project_id), run_id, str(status), {}, frozenset(), None, int(version))


def read_cursor(project_id: int, raw: str | bytes) -> ProjectCursor | None:
    """The cursor a row holds; None (as if never stored) when it is unreadable."""
    try:
        return ProjectCursor.from_data(project_id, json.loads(raw))
    except UNREADABLE as error:
        _warn_unreadable(f"the cursor of workspace {project_id}", error)
        return None


def read_lease_data(name: str, raw: str | bytes | None) -> dict[str, Any]:
    """A lease's data (a channel's rate budget); empty when it is unreadable."""
    try:
        data = json.loads(raw or "{}")
        if not isinstance(data, dict):
            raise TypeError(f"not a JSON object: {type(data).__name__}")
        return data
    except UNREADABLE as error:
        _warn_unreadable(f"the data of lease {name}", error)
        return {}


def read_message(columns: Mapping[str, Any], raw: str | bytes) -> OutboxMessage:
    """The message its columns and blob make; if the blob is unreadable, one marked `unreadable`."""
    try:
        return message_from_data(columns, json.loads(raw))
    except UNREADABLE as error:
        reason = _warn_unreadable(f"message {columns.get('id')} to {columns.get('channel')}", error)
        blank = OutboxMessage(**columns, run_key="", rule="", title="(unreadable)", text="")
        return replace(blank, unreadable=reason, last_error=f"the stored message cannot be read: {reason}")


def shift_seqs(messages: Sequence[OutboxMessage], top: int | None) -> list[OutboxMessage]:
    """The messages with their seqs moved up together, in order, to lie above `top` (the highest given).

    A seq is made from the committing tick's clock: after that clock stepped back, a later message
    would otherwise sort before an earlier one still waiting.
    """
    if top is None or not messages:
        return list(messages)
    shift = top + 1 - min(message.seq for message in messages)
    if shift <= 0:
        return list(messages)
    return [replace(message, seq=message.seq + shift) for message in messages]


@dataclass(frozen=True)
class StatusReport:
    """What `dwnotify status` lists."""

    runs: tuple[RunState, ...]
    messages: tuple[OutboxMessage, ...]


class StateStore(Protocol):
    """Durable state shared by every tick, wherever it runs."""

    def load_runs(self, keys: Collection[str]) -> dict[str, RunState]:
        """The stored states of these runs (absent keys are simply missing from the result)."""
        ...

    def load_cursors(self, project_ids: Collection[int]) -> dict[int, ProjectCursor]:
        """The stored cursors of these workspaces."""
        ...

    def open_tick(self, project_ids: Collection[int], now: float) -> TickStart:
        """The cursors of these workspaces and the tick lease, read together (one round trip when all is
        well), writing nothing.

        A backend whose commits can be cut short (Tablestore's intents) first finishes a commit that a
        stopped tick left: it then takes and gives back the tick lease, and reads the cursors after.
        """
        ...

    def acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
        """Take or renew the lease `name` for `owner`; None while another owner holds it.

        Another owner's lease that expires more than twice `ttl_s` from now was taken by a clock
        that has since gone back: it is cut to expire `ttl_s` from now (and still refused).
        """
        ...

    def release_lease(self, lease: Lease, data: Mapping[str, Any] | None = None) -> None:
        """Give the lease back (only if still held by its owner); its stored data is kept as it is, or
        replaced by `data` when given (the tick lease's call budget ledger)."""
        ...

    def keep_lease_data(self, lease: Lease) -> None:
        """Store `lease.data` while keeping the lease; ConflictError when its owner no longer holds it."""
        ...

    def commit(
        self,
        lease: Lease,
        runs: Sequence[RunState],
        cursors: Sequence[ProjectCursor],
        messages: Sequence[OutboxMessage],
        now: float,
    ) -> None:
        """Atomically store run states and cursors (compare-and-set on `version`) and new messages.

        Raises ConflictError, writing nothing, when `lease` is no longer held by its owner or a
        run's or cursor's stored version differs from the one given. Messages whose id exists are left as
        they are. New messages keep their order but are stored with seqs above every seq stored
        before (`shift_seqs`), so they are delivered after every earlier commit's messages.
        """
        ...

    def channels_with_pending(self) -> list[str]:
        """Names of the channels that have pending messages."""
        ...

    def pending_messages(self, channel: str) -> list[OutboxMessage]:
        """A channel's pending messages in delivery order."""
        ...

    def update_messages(self, lease: Lease, messages: Sequence[OutboxMessage]) -> None:
        """Store messages' new delivery status and `lease.data` (the channel's rate budget) at once.

        Raises ConflictError, writing nothing, when `lease` is no longer held by its owner.
        """
        ...

    def runs_updated_since(self, since: float, limit: int = 10_000) -> list[tuple[RunState, float]]:
        """Every run state stored or changed at or after `since` (epoch seconds), with when it was
        (a daily digest's runs); at most `limit`, the most recent first."""
        ...

    def load_living(self, channel: str, run_keys: Collection[str]) -> dict[str, LivingMessage]:
        """The living messages of these runs on `channel` (runs without one are missing)."""
        ...

    def store_living(self, living: LivingMessage, now: float) -> LivingMessage:
        """Store a living message at its next version; the stored record is returned.

        Raises ConflictError, writing nothing, when the stored record is not at `living.version`
        (another sender stored it since it was read). Not conditional on the channel lease: a sender
        that lost its lease while a post was in flight still records the message it made, truthfully.
        """
        ...

    def load_action(self, key: str) -> ActionRecord | None:
        """The decision recorded for `key` (`ActionRecord.key`), if any."""
        ...

    def store_action(self, record: ActionRecord, now: float) -> ActionRecord:
        """Store a decision at its next version; the stored record is returned.

        Raises ConflictError, writing nothing, when the stored record is not at `record.version`
        (version 0: when there is one at all): how a click claims its decision exactly once.
        """
        ...

    def report(self, limit: int = 200) -> StatusReport:
        """Tracked runs still moving, and pending or failed messages, for `dwnotify status`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
