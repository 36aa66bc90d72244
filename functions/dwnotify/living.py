"""Living messages: one chat message per run and channel, posted once and edited as the run moves.

For a channel type that can edit (`ChannelType.living`: the Slack app), delivery sends a run's
pending outbox messages as one step (`LivingSteps.show`): the run's message is brought to the newest
of them (the earlier renderings are superseded, never shown out of order), then each message's thread
reply goes out in order. What makes it safe:

- Each run's message is recorded in the state store (`LivingMessage`). Before a first post, the
  record is stored with `posting_since`; once the post is answered its `ts` replaces that. A record
  found with `posting_since` still set means a post may have landed unrecorded (a crash, a lost
  answer): the channel's history is searched for the message (it carries the run in its metadata)
  before anything is posted, so a crash never makes a second message for a run.
- A message deleted in the chat (`MessageGone` on edit) is posted anew.
- The steps run under the channel's delivery lease (one sender per channel at a time), and record
  writes are compare-and-set, so two ticks never post one run twice.
- An edit or a reply that fails stays in the outbox with the usual retries; the run's later
  messages wait behind it, so two edits of a message never land out of order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .errors import DeliveryError
from .message import Message
from .model import FINAL_STATUSES, SUCCESS, Event
from .state.base import LivingMessage, OutboxMessage

log = logging.getLogger(__name__)

# A living message's thread reply is rendered from `<template>-reply`, else (when there is no such
# template) from this one.
REPLY_TEMPLATE = "default-reply"


def reply_template(template: str, exists: Callable[[str], bool]) -> str:
    """The template a rule's thread replies render from: `<template>-reply` if it `exists`."""
    own = f"{template}-reply"
    return own if exists(own) else REPLY_TEMPLATE


@dataclass(frozen=True)
class Posted:
    """Where a posted message is: the service's channel id and the message's id (`ts`)."""

    channel_id: str
    ts: str


class MessageGone(DeliveryError):
    """The message to edit is no longer there (deleted in the chat): the run is posted anew."""


class LivingChannel(Protocol):
    """A chat channel that can post, edit and reply to a run's message, and find a lost post."""

    name: str
    deadline: float | None

    def post(self, message: Message, run_key: str) -> Posted:
        """Post the run's message; where it is."""
        ...

    def update(self, posted: Posted, message: Message) -> None:
        """Edit the run's message; MessageGone when it no longer exists."""
        ...

    def reply(self, posted: Posted, text: str) -> None:
        """Reply in the message's thread."""
        ...

    def find(self, run_key: str, since: float) -> Posted | None:
        """The run's message posted since `since`, if there is one."""
        ...


class LivingStore(Protocol):
    """The state-store calls the steps make."""

    def store_living(self, living: LivingMessage, now: float) -> LivingMessage:
        """See StateStore."""
        ...


def wants_reply(events: Sequence[Event]) -> bool:
    """Whether a living message's change also replies in its thread: a failure, the run's end, or a
    reminder (a stage waiting for a person, or running long)."""
    return any(
        bool(event.reminder)
        or (event.status in FINAL_STATUSES and (event.stage is None or event.status != SUCCESS))
        for event in events
    )


def by_run(messages: Sequence[OutboxMessage]) -> list[list[OutboxMessage]]:
    """Messages grouped by run, in order within each, runs in the order of their first message."""
    groups: dict[str, list[OutboxMessage]] = {}
    for message in messages:
        groups.setdefault(message.run_key, []).append(message)
    return list(groups.values())


class LivingSteps:
    """Brings a run's message up to date on one channel, recording where it is as it goes.

    `pace()` is called before every call to the service: False means the channel's rate budget has
    no room this tick (the step stops; what is left waits for the next tick).
    """

    def __init__(
        self,
        store: LivingStore,
        channel: LivingChannel,
        clock: Callable[[], float],
        pace: Callable[[], bool],
    ) -> None:
        self._store = store
        self._channel = channel
        self._clock = clock
        self._pace = pace

    def show(self, record: LivingMessage, message: Message) -> LivingMessage | None:
        """Make the run's message show `message`: edit it, find it, or post it. The record as stored
        now, or None when the rate budget left no room (nothing was changed in the chat)."""
        if record.posted:
            if not self._pace():
                return None
            try:
                self._channel.update(Posted(record.channel_id, record.ts), message)
                return record
            except MessageGone:
                log.warning(
                    "living: run %s's message on %s was deleted in the chat; posting it anew",
                    record.run_key,
                    record.channel,
                )
            return self._post(replace(record, ts="", channel_id=""), message)
        if record.posting_since is not None:
            if not self._pace():
                return None
            found = self._find(record)
            if found is not None:
                record = self._store.store_living(
                    replace(record, ts=found.ts, channel_id=found.channel_id, posting_since=None),
                    self._clock(),
                )
                return self.show(record, message)
        return self._post(record, message)

    def reply(self, record: LivingMessage, text: str) -> bool:
        """Reply in the run's thread; False when the rate budget left no room."""
        if not self._pace():
            return False
        self._channel.reply(Posted(record.channel_id, record.ts), text)
        return True

    def _find(self, record: LivingMessage) -> Posted | None:
        """The post a stopped sender may have made; None when there is none (or it cannot be looked for)."""
        try:
            return self._channel.find(record.run_key, record.posting_since or 0.0)
        except DeliveryError as error:
            if error.retryable:
                raise
            log.warning(
                "living: cannot look for run %s's earlier post on %s (%s); posting it, which may show "
                "the run twice if that post had landed",
                record.run_key,
                record.channel,
                error,
            )
            return None

    def _post(self, record: LivingMessage, message: Message) -> LivingMessage | None:
        if not self._pace():
            return None
        intent = self._store.store_living(replace(record, posting_since=self._clock()), self._clock())
        posted = self._channel.post(message, record.run_key)
        done = replace(intent, ts=posted.ts, channel_id=posted.channel_id, posting_since=None)
        return self._store.store_living(done, self._clock())
