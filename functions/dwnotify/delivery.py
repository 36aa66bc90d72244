"""Sending the outbox: one lease per channel, rate budgets kept in the store, digests, retries.

For each channel with pending messages, a tick takes the channel's lease (so two ticks never send
to one webhook at once), sends the due messages in order, and marks each one sent only after the
service accepted it. A message waiting for a retry holds back the later messages of its run on that
channel, never other runs or channels. When more messages are due than the channel's rate budget
allows, they are merged into digest messages instead of being dropped or getting the robot silenced.

A message held through a rule's quiet hours (`held_until`) is not sent before then, and holds back
nothing meanwhile: the run's later messages that are not held (the events the rule lets through)
go at once. Once its window has ended it is an ordinary pending message: the channel's held
messages that are due go out merged, in order, into one digest (with whatever lies between them, so
no run's order changes; several posts if it outgrows the channel's size limit), and one whose post
failed waits for its retry and holds back its run like any other. Its `delivery.max_age` counts from
the window's end. A living channel (`dwnotify.living`) has no digests: a held message waits, then
goes through its run's step as usual; a later message shown during the window first lends the held
ones of its run its rendering, so the edit at the window's end never shows an older state.

The channel lease outlasts any one send: it lasts at least twice the send timeout (plus a margin),
and is renewed before a send whose timeout could outlast what is left of it, so no other tick takes
the channel while a send is still waiting for its answer.

Times kept in the store come from the clock of the tick that wrote them, and clocks step back. A
stored time can lie no further ahead than dwnotify itself ever waits: a send time not after now, a
channel's pause at most MAX_PAUSE_S, a message's retry at most RETRY_CAP_S after now (or the pause),
a hold at most LONGEST_WINDOW; one further ahead is brought back to that bound and stored so,
instead of stalling the channel until the clock catches up.

Channels are independent, so they send in parallel: each channel's pass (lease, sends in order,
records, release) runs in a thread of its own, at most MAX_PARALLEL_CHANNELS at once, and a pass
that raises stops only its own channel. Only the sends overlap: the state stores are not safe for
concurrent use, so every store call goes through one lock (`_SerialStore`). A tick with one
channel to serve sends from the calling thread, starting none.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, cast

from .channels import CHANNEL_TYPES
from .channels.base import Channel
from .channels.kind import RateBudget
from .errors import ConflictError, DeliveryError, StateError
from .living import LivingChannel, LivingSteps, by_run
from .logs import mask
from .message import Message
from .outbox import is_digest, message_of
from .quiet import LONGEST_WINDOW
from .settings import ChannelSettings
from .state.base import (
    FAILED,
    SENT,
    Lease,
    LivingMessage,
    OutboxMessage,
    StateStore,
    channel_lease,
    leased_channel,
)
from .timing import backoff

log = logging.getLogger(__name__)

CHANNEL_LEASE_S = 60.0  # the shortest channel lease: a killed tick's channel comes back within a minute
LEASE_MARGIN_S = 15.0  # beyond a send's timeout: storing what it did, and clocks that differ a little
RETRY_BASE_S = 10.0
RETRY_CAP_S = 120.0  # a waiting message is tried again at least every two minutes
MAX_PAUSE_S = 600.0  # the longest a channel is left alone: DingTalk silences a robot for ten minutes
# Recording a send that landed is tried this often, a short pause between, before the message is
# left pending (and sent again): the pauses fit in LEASE_MARGIN_S.
RECORD_ATTEMPTS = 3
RECORD_PAUSE_S = 1.0
# Channels sending at once: each is a thread mostly waiting on its webhook's answer.
MAX_PARALLEL_CHANNELS = 8
_LONGEST_HOLD_S = LONGEST_WINDOW.total_seconds()


def channel_lease_s(send_timeout_s: float) -> float:
    """How long a channel lease lasts: a send and the renewal before the next one both fit in it."""
    return max(CHANNEL_LEASE_S, 2 * send_timeout_s + LEASE_MARGIN_S)


@dataclass
class DeliveryStats:
    """What one delivery pass did."""

    sent: int = 0
    failed: int = 0
    posts: int = 0
    pending: int = 0

    def add(self, other: DeliveryStats) -> None:
        """Count what another pass did too."""
        self.sent += other.sent
        self.failed += other.failed
        self.posts += other.posts
        self.pending += other.pending


class _SerialStore:
    """The store calls delivery makes, one at a time: no state store is safe for concurrent use
    (SQLite's one connection runs explicit transactions, Tablestore keeps per-lease bookkeeping)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def channels_with_pending(self) -> list[str]:
        """See StateStore."""
        with self._lock:
            return self._store.channels_with_pending()

    def pending_messages(self, channel: str) -> list[OutboxMessage]:
        """See StateStore."""
        with self._lock:
            return self._store.pending_messages(channel)

    def acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
        """See StateStore."""
        with self._lock:
            return self._store.acquire_lease(name, owner, ttl_s, now)

    def release_lease(self, lease: Lease) -> None:
        """See StateStore."""
        with self._lock:
            self._store.release_lease(lease)

    def update_messages(self, lease: Lease, messages: Sequence[OutboxMessage]) -> None:
        """See StateStore."""
        with self._lock:
            self._store.update_messages(lease, messages)

    def load_living(self, channel: str, run_keys: Collection[str]) -> dict[str, LivingMessage]:
        """See StateStore."""
        with self._lock:
            return self._store.load_living(channel, run_keys)

    def store_living(self, living: LivingMessage, now: float) -> LivingMessage:
        """See StateStore."""
        with self._lock:
            return self._store.store_living(living, now)


@dataclass
class _Budget:
    """A channel's recent send times, as kept in its lease data.

    `rewrite` says that it differs from what is stored and must be stored again: a time lay further
    ahead than it could (see the module doc), or the stored data could not be read.
    """

    rate: RateBudget
    sent_at: list[float]
    paused_until: float
    rewrite: bool = False

    @classmethod
    def load(cls, rate: RateBudget, data: Mapping[str, Any], now: float) -> _Budget:
        try:
            stored = [float(t) for t in data.get("sent_at", [])]
            paused = float(data.get("paused_until", 0.0))
        except (TypeError, ValueError) as error:  # a damaged lease row: start the budget afresh
            log.warning("delivery: a channel's rate budget cannot be read, started afresh: %s", error)
            return cls(rate, [], 0.0, rewrite=True)
        recent = [min(t, now) for t in stored if t > now - rate.window_s]
        latest = now + MAX_PAUSE_S
        rewrite = any(t > now for t in stored) or paused > latest
        return cls(rate, recent, min(paused, latest), rewrite)

    def dump(self) -> dict[str, Any]:
        return {"sent_at": self.sent_at, "paused_until": self.paused_until}

    def remaining(self, now: float) -> int:
        # Clamped again here too: the clock may step back in the middle of a pass.
        self.sent_at = [min(t, now) for t in self.sent_at if t > now - self.rate.window_s]
        return max(0, self.rate.messages - len(self.sent_at))

    def wait_for_room(self, now: float) -> float:
        """Seconds until one more send fits the window."""
        if self.remaining(now) > 0:
            return 0.0
        return float(self.sent_at[0] + self.rate.window_s - now)


class _Pacer:
    """Room for the next send of one pass: within the rate budget, waiting at most what a tick may
    wait in all (`inline_wait_s`), and only for a send that can finish before the tick's deadline."""

    def __init__(
        self,
        budget: _Budget,
        deadline: float | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        send_timeout_s: float,
    ) -> None:
        self._budget = budget
        self._deadline = deadline
        self._clock = clock
        self._sleep = sleep
        self._send_timeout_s = send_timeout_s
        self._waited = 0.0

    def room(self) -> bool:
        """Wait for room if need be; False when there is none this tick."""
        wait = self._budget.wait_for_room(self._clock())
        if self._deadline is not None and self._clock() + wait + self._send_timeout_s >= self._deadline:
            return False  # a send that might not finish before FC's timeout waits for the next tick
        if wait > 0 and self._waited + wait > self._budget.rate.inline_wait_s:
            return False
        if wait > 0:
            self._sleep(wait)
            self._waited += wait
        return True

    def take(self) -> bool:
        """`room`, and the send counted in the budget (every attempt: a timed-out one may have landed)."""
        if not self.room():
            return False
        self._budget.sent_at.append(self._clock())
        return True


def retry_delay(attempts: int, retry_after: float | None, jitter: float) -> float:
    """Exponential backoff with jitter, at least the service's Retry-After, capped at two minutes."""
    return min(RETRY_CAP_S, max(backoff(attempts, RETRY_BASE_S, RETRY_CAP_S, jitter), retry_after or 0.0))


def digest(channel_type: str, messages: Sequence[OutboxMessage]) -> Message:
    """One message carrying several, in order (its title says when some were held in quiet hours)."""
    if len(messages) == 1:
        return message_of(messages[0])
    rules = CHANNEL_TYPES[channel_type].digest
    held = any(m.held_until is not None for m in messages)
    title = f"DataWorks: {len(messages)} updates" + (" from quiet hours" if held else "")
    header = rules.heading.format(title=title)
    mentioned = {person: None for m in messages for person in message_of(m).mentions}  # ordered, once
    text = rules.separator.join([header, *(m.text for m in messages)])
    return Message(title, text, mentions=tuple(mentioned))


def pack(channel_type: str, messages: Sequence[OutboxMessage]) -> list[list[OutboxMessage]]:
    """Group messages, in order, into digests that each stay under the channel's size limit.

    A message with its own Block Kit layout goes alone: a digest is made of texts.
    """
    limit = CHANNEL_TYPES[channel_type].digest.max_bytes
    groups: list[list[OutboxMessage]] = []
    size = 0
    for message in messages:
        length = len(message.text.encode("utf-8")) + 16
        alone = message.blocks_json is not None or (groups and groups[-1][-1].blocks_json is not None)
        if not groups or alone or size + length > limit:
            groups.append([])
            size = 0
        groups[-1].append(message)
        size += length
    return groups


class Deliverer:
    """Sends every channel's due messages once, in order, within its rate budget."""

    def __init__(
        self,
        store: StateStore,
        channels: Mapping[str, ChannelSettings],
        make_channel: Callable[[ChannelSettings], Channel],
        *,
        owner: str,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        max_age_s: float,
        send_timeout_s: float = 10.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = _SerialStore(store)
        self._channels = channels
        self._make_channel = make_channel
        self._owner = owner
        self._clock = clock
        self._sleep = sleep
        self._max_age_s = max_age_s
        self._send_timeout_s = send_timeout_s
        self._lease_s = channel_lease_s(send_timeout_s)
        self._jitter = jitter
        self._built: dict[str, Channel] = {}
        self._building = threading.Lock()

    def deliver(self, deadline: float | None = None) -> DeliveryStats:
        """One pass over every channel that has pending messages; `stats.pending` is what is left.

        Channels with something due are served in parallel. One whose pass raises stops only
        itself: the others finish, then its error is raised (the first channel's, by name order,
        and a BaseException such as SystemExit before any Exception; the others are logged).
        """
        stats = DeliveryStats()
        ready: list[tuple[str, int]] = []
        for name in self._store.channels_with_pending():
            pending = self._store.pending_messages(name)
            if self._out_of_time(deadline) or not any(self._actionable(m) for m in pending):
                stats.pending += len(pending)
                continue  # nothing due: no lease taken, no write made
            ready.append((name, len(pending)))
        if len(ready) <= 1:  # a quiet or single-channel tick starts no thread
            passes = [self._deliver_pass(name, count, deadline) for name, count in ready]
        else:
            passes = self._deliver_in_parallel(ready, deadline)
        for done in passes:
            stats.add(done)
        return stats

    def _deliver_in_parallel(
        self, ready: list[tuple[str, int]], deadline: float | None
    ) -> list[DeliveryStats]:
        """Each channel's pass in a thread of its own; what they did, once every one has ended."""
        stopping = threading.Event()

        def one_pass(name: str, count: int) -> DeliveryStats:
            if stopping.is_set():  # a pass raised a BaseException: the process is going down
                return DeliveryStats(pending=count)
            try:
                return self._deliver_pass(name, count, deadline)
            except BaseException as error:
                if not isinstance(error, Exception):
                    stopping.set()
                raise

        workers = min(MAX_PARALLEL_CHANNELS, len(ready))
        # Leaving the block waits for every pass: no thread outlives delivery (FC freezes an idle
        # instance). Passes not yet started are skipped through `stopping` rather than cancelled, so
        # every future ends with a result or an error.
        with ThreadPoolExecutor(workers, thread_name_prefix="dwnotify-delivery") as pool:
            passes = [(name, pool.submit(one_pass, name, count)) for name, count in ready]
        errors = {name: error for name, future in passes if (error := future.exception()) is not None}
        if errors:
            _raise_first(errors)
        return [future.result() for _, future in passes]

    def _deliver_pass(self, name: str, pending: int, deadline: float | None) -> DeliveryStats:
        """One channel's pass: take its lease, send what is due in order, give the lease back."""
        stats = DeliveryStats()
        if self._out_of_time(deadline):  # checked again: a pass may have waited for a free thread
            stats.pending += pending
            return stats
        lease = self._store.acquire_lease(channel_lease(name), self._owner, self._lease_s, self._clock())
        if lease is None:
            stats.pending += pending
            return stats  # another tick is sending to this channel right now
        try:
            self._deliver_channel(name, lease, stats, deadline)
        except ConflictError as error:
            log.warning("delivery: lost the lease of channel %s: %s", name, error)
            return stats
        self._store.release_lease(lease)
        return stats

    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and self._clock() >= deadline

    def _actionable(self, message: OutboxMessage) -> bool:
        now = self._clock()
        if _holding(message, now):
            return (message.held_until or 0.0) > now + _LONGEST_HOLD_S  # to be brought back, as below
        if message.next_attempt_at > now + MAX_PAUSE_S:
            return True  # a retry time from a clock that has gone back since: to be brought back
        return message.due(now) or self._expired(message, now)

    def _expired(self, message: OutboxMessage, now: float) -> bool:
        """Unreadable, or past max_age: counted from its quiet window's end when it was held (a
        weekend's hold outlasts a day)."""
        since = max(message.created_at, message.held_until or 0.0)
        return bool(message.unreadable) or now - since > self._max_age_s

    def _give_up(
        self, lease: Lease, messages: list[OutboxMessage], reason: str, stats: DeliveryStats
    ) -> None:
        """Mark messages failed with a reason, logged once at ERROR."""
        if not messages:
            return
        now = self._clock()
        reason = mask(reason)  # masked before it is stored: `status` and the state rows print it
        failed = [replace(m, status=FAILED, last_error=reason, finished_at=now) for m in messages]
        self._store.update_messages(lease, failed)
        for message in failed:
            log.error("delivery: message %s to %s given up: %s", message.id, message.channel, reason)
        stats.failed += len(failed)

    def _sort(self, messages: list[OutboxMessage]) -> tuple[list[OutboxMessage], list[OutboxMessage], int]:
        """(due now, past max_age, still waiting): a waiting message holds back later ones of its run,
        one held in quiet hours does not.

        A message that cannot be read counts as past max_age: it can never be sent.
        """
        now = self._clock()
        due: list[OutboxMessage] = []
        expired: list[OutboxMessage] = []
        waiting_runs: set[str] = set()
        waiting = 0
        for message in messages:
            if self._expired(message, now):
                expired.append(message)
            elif _holding(message, now) and message.run_key not in waiting_runs:
                waiting += 1
            elif message.run_key in waiting_runs or not message.due(now):
                waiting_runs.add(message.run_key)
                waiting += 1
            else:
                due.append(message)
        return due, expired, waiting

    def _deliver_channel(self, name: str, lease: Lease, stats: DeliveryStats, deadline: float | None) -> None:
        settings = self._channels.get(name)
        # A channel no longer configured has its messages given up below; the budget is never spent.
        rate = CHANNEL_TYPES[settings.type].rate if settings else RateBudget(20, 60.0)
        budget = _Budget.load(rate, lease.data, self._clock())
        pending = self._clamp(lease, budget, self._store.pending_messages(name))
        due, expired, waiting = self._sort(pending)
        for message in expired:
            if message.unreadable:
                reason = f"its stored record cannot be read ({message.unreadable})"
            else:
                reason = f"not delivered within delivery.max_age (last error: {message.last_error or 'none'})"
            self._give_up(replace(lease, data=budget.dump()), [message], reason, stats)
        if settings is None:
            self._give_up(
                replace(lease, data=budget.dump()), due, f"channel {name} is no longer configured", stats
            )
            stats.pending += waiting
            return
        sent_before, failed_before = stats.sent, stats.failed
        if CHANNEL_TYPES[settings.type].living:
            held = [message for message in pending if _holding(message, self._clock())]
            self._send_living(settings, lease, budget, due, held, stats, deadline)
        else:
            self._send_due(settings, lease, budget, due, stats, deadline)
        handled = (stats.sent - sent_before) + (stats.failed - failed_before)
        stats.pending += waiting + len(due) - handled

    def _clamp(self, lease: Lease, budget: _Budget, messages: list[OutboxMessage]) -> list[OutboxMessage]:
        """Bring retry times from the future back to the latest dwnotify sets, and store them so.

        Stored with the budget when that was brought back too: a time brought back only in memory
        would be brought back again by every tick, and the wait would never end.
        """
        now = self._clock()
        latest = max(budget.paused_until, now + RETRY_CAP_S)
        clamped = [c for m in messages if (c := _bounded(m, latest, now + _LONGEST_HOLD_S)) is not None]
        if clamped or budget.rewrite:
            log.warning(
                "delivery: channel %s: stored send, pause or retry times brought back to the bounds "
                "dwnotify sets (a clock that has gone back since, or a damaged row)",
                leased_channel(lease.name),
            )
            self._store.update_messages(replace(lease, data=budget.dump()), clamped)
            budget.rewrite = False
        by_id = {m.id: m for m in clamped}
        return [by_id.get(m.id, m) for m in messages]

    def _send_due(
        self,
        settings: ChannelSettings,
        lease: Lease,
        budget: _Budget,
        due: list[OutboxMessage],
        stats: DeliveryStats,
        deadline: float | None,
    ) -> None:
        if not due or budget.paused_until > self._clock():
            return
        pacer = self._pacer(budget, deadline)
        for unit in self._units(settings.type, budget, due):
            if not pacer.room():
                return  # the rest waits for the next tick, still in order
            renewed = self._renewed(lease)
            if renewed is None:
                return
            lease = renewed
            if not self._send_unit(settings, lease, budget, unit, stats, deadline):
                return

    def _units(
        self, channel_type: str, budget: _Budget, due: list[OutboxMessage]
    ) -> list[list[OutboxMessage]]:
        """The sends the due messages make, in order: each alone, except the ones held through quiet
        hours, which go in one digest (with the messages between them, so that no run's order
        changes); everything packed into digests when that makes more sends than the budget allows."""
        held = [index for index, message in enumerate(due) if message.held_until is not None]
        units = [[message] for message in due]
        if held:
            first, last = held[0], held[-1] + 1
            units = [*units[:first], *pack(channel_type, due[first:last]), *units[last:]]
        if len(units) <= max(1, budget.rate.capacity(budget.remaining(self._clock()))):
            return units
        return pack(channel_type, due)

    def _pacer(self, budget: _Budget, deadline: float | None) -> _Pacer:
        return _Pacer(budget, deadline, self._clock, self._sleep, self._send_timeout_s)

    def _renewed(self, lease: Lease) -> Lease | None:
        """The lease, renewed when a send could outlast it; None when another tick has taken it.

        Also renewed when far more is left than it was taken for, which only a clock gone back can
        show (and which another tick would cut).
        """
        left = lease.expires_at - self._clock()
        if self._send_timeout_s + LEASE_MARGIN_S <= left <= self._lease_s + LEASE_MARGIN_S:
            return lease
        return self._store.acquire_lease(lease.name, self._owner, self._lease_s, self._clock())

    def _sender(self, settings: ChannelSettings, deadline: float | None) -> Channel:
        """The channel's sender (built once), its send budget ending at `deadline` at the latest."""
        with self._building:  # the factory opens its one shared HTTP client at the first call
            channel = self._built.get(settings.name) or self._make_channel(settings)
            self._built[settings.name] = channel
        channel.deadline = deadline
        return channel

    def _send_living(
        self,
        settings: ChannelSettings,
        lease: Lease,
        budget: _Budget,
        due: list[OutboxMessage],
        held: list[OutboxMessage],
        stats: DeliveryStats,
        deadline: float | None,
    ) -> None:
        """A living channel's due messages, one run at a time (`dwnotify.living`); `held`: the ones
        still held in quiet hours."""
        if not due or budget.paused_until > self._clock():
            return
        channel = cast(LivingChannel, self._sender(settings, deadline))
        records = self._store.load_living(settings.name, {message.run_key for message in due})
        pacer = self._pacer(budget, deadline)
        steps = LivingSteps(self._store, channel, self._clock, pacer.take)
        for group in by_run(due):
            renewed = self._renewed(lease)
            if renewed is None:
                return
            lease = renewed
            run = group[0].run_key
            if is_digest(run):  # a daily digest is a message of its own, not a run's living one
                for message in group:
                    if not pacer.room() or not self._send_unit(
                        settings, lease, budget, [message], stats, deadline
                    ):
                        return
                continue
            self._lend_rendering(lease, budget, group[-1], [m for m in held if m.run_key == run])
            record = records.get(run) or LivingMessage(settings.name, run)
            shown = self._send_living_run(steps, lease, budget, record, group, stats)
            if shown is None:
                return
            records[run] = shown

    def _lend_rendering(
        self, lease: Lease, budget: _Budget, newest: OutboxMessage, held: list[OutboxMessage]
    ) -> None:
        """Give the run's held messages older than `newest` its rendering, before it is shown: at the
        window's end their edit then shows it again, not the older state they were made with (their
        replies stay their own)."""
        lent = [
            replace(
                m,
                title=newest.title,
                text=newest.text,
                blocks_json=newest.blocks_json,
                mentions_json=newest.mentions_json,
            )
            for m in held
            if m.seq < newest.seq
            and (m.title, m.text, m.blocks_json) != (newest.title, newest.text, newest.blocks_json)
        ]
        if lent:
            self._store.update_messages(replace(lease, data=budget.dump()), lent)

    def _send_living_run(
        self,
        steps: LivingSteps,
        lease: Lease,
        budget: _Budget,
        record: LivingMessage,
        group: list[OutboxMessage],
        stats: DeliveryStats,
    ) -> LivingMessage | None:
        """Show a run's newest message and send each message's reply; the record after, or None when
        the channel should not be tried again this tick."""
        done: list[OutboxMessage] = []
        calls = 0  # that changed the chat: the edit (or post), then each reply
        try:
            shown = steps.show(record, message_of(group[-1]))  # the earlier renderings are superseded
            if shown is None:
                return None
            calls += 1
            for message in group:
                if message.reply and not steps.reply(shown, message.reply):
                    self._record_done(lease, budget, done, stats, calls)
                    return None
                calls += bool(message.reply)
                done.append(message)
        except DeliveryError as error:
            self._record_done(lease, budget, done, stats, calls)
            left = group[len(done) :]
            return record if self._record_failure(lease, budget, left, error, stats) else None
        self._record_done(lease, budget, done, stats, calls)
        return shown

    def _record_done(
        self, lease: Lease, budget: _Budget, done: list[OutboxMessage], stats: DeliveryStats, calls: int
    ) -> None:
        if not done:
            return
        now = self._clock()
        sent = [
            replace(m, status=SENT, attempts=m.attempts + 1, finished_at=now, last_error="") for m in done
        ]
        self._record_sent(replace(lease, data=budget.dump()), sent)
        stats.sent += len(sent)
        stats.posts += calls

    def _send_unit(
        self,
        settings: ChannelSettings,
        lease: Lease,
        budget: _Budget,
        unit: list[OutboxMessage],
        stats: DeliveryStats,
        deadline: float | None,
    ) -> bool:
        """Send one message or digest; False when the channel should not be tried again this tick."""
        channel = self._sender(settings, deadline)
        budget.sent_at.append(self._clock())  # every attempt counts: a timed-out one may have landed
        try:
            channel.send(digest(settings.type, unit))
        except DeliveryError as error:
            return self._record_failure(lease, budget, unit, error, stats)
        now = self._clock()
        done = [
            replace(m, status=SENT, attempts=m.attempts + 1, finished_at=now, last_error="") for m in unit
        ]
        self._record_sent(replace(lease, data=budget.dump()), done)
        stats.sent += len(unit)
        stats.posts += 1
        return True

    def _record_sent(self, lease: Lease, done: list[OutboxMessage]) -> None:
        """Store that messages went out, retrying a failed write: unrecorded, they would go out again.

        The write is conditional on the lease's owner only, so repeating one that applied though it
        was reported failed (a lost answer, a false condition failure) is harmless.
        """
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                self._store.update_messages(lease, done)
                return
            except StateError as error:
                if attempt == RECORD_ATTEMPTS:
                    raise
                log.warning(
                    "delivery: recording %d sent message(s) failed (%s), trying again", len(done), error
                )
                self._sleep(RECORD_PAUSE_S * attempt)

    def _record_failure(
        self,
        lease: Lease,
        budget: _Budget,
        unit: list[OutboxMessage],
        error: DeliveryError,
        stats: DeliveryStats,
    ) -> bool:
        now = self._clock()
        tried = [replace(m, attempts=m.attempts + 1) for m in unit]
        if not error.retryable:
            self._give_up(replace(lease, data=budget.dump()), tried, str(error), stats)
            return True
        reason = mask(str(error))  # masked before it is stored: `status` and the state rows print it
        if error.retry_after:
            budget.paused_until = now + min(error.retry_after, MAX_PAUSE_S)
        waiting = [
            replace(
                m,
                last_error=reason,
                # Not before the channel's pause ends: an earlier try would only take the lease.
                next_attempt_at=max(
                    budget.paused_until, now + retry_delay(m.attempts, error.retry_after, self._jitter())
                ),
            )
            for m in tried
        ]
        self._store.update_messages(replace(lease, data=budget.dump()), waiting)
        log.warning("delivery: %s will retry %d message(s): %s", error.channel, len(unit), reason)
        return False


def _bounded(message: OutboxMessage, latest: float, longest_hold: float) -> OutboxMessage | None:
    """The message with its retry time brought back to `latest` (a hold's to `longest_hold`);
    None when it lies within them."""
    if message.held_until is not None and message.held_until > longest_hold:
        return replace(message, held_until=longest_hold, next_attempt_at=longest_hold)
    if message.next_attempt_at > max(latest, message.held_until or 0.0):
        return replace(message, next_attempt_at=latest)
    return None


def _holding(message: OutboxMessage, now: float) -> bool:
    """Whether a message is still held in its rule's quiet hours."""
    return message.held_until is not None and message.held_until > now


def _raise_first(errors: Mapping[str, BaseException]) -> None:
    """Raise the error of the first channel by name, a BaseException before an Exception; log the rest."""
    names = sorted(errors, key=lambda name: (isinstance(errors[name], Exception), name))
    for name in names[1:]:
        log.error("delivery: channel %s stopped: %s", name, errors[name], exc_info=errors[name])
    raise errors[names[0]]
