"""Outbox records: what one routed, rendered message becomes in the state store, and back again.

A record's id is stable (the same events routed the same way always make the same row, so a tick
that repeats a commit stores nothing twice); its seq orders it within its channel.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, fields

from .message import Message
from .model import Event
from .settings import PersonSettings
from .state.base import OutboxMessage

_DIGEST_PREFIX = "digest/"


def digest_key(rule: str, day: str) -> str:
    """The run key a rule's daily digest for `day` is recorded under: not a run's (no living message)."""
    return f"{_DIGEST_PREFIX}{rule}/{day}"


def is_digest(run_key: str) -> bool:
    """Whether a record is a daily digest rather than a run's message."""
    return run_key.startswith(_DIGEST_PREFIX)


def message_id(run_key: str, rule: str, channel: str, events: Sequence[Event]) -> str:
    """A stable id: the same events routed the same way always make the same outbox row."""
    material = "|".join([run_key, rule, channel, *(event.key for event in events)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def record(
    message: Message,
    *,
    run_key: str,
    rule: str,
    channel: str,
    events: Sequence[Event],
    now: float,
    index: int,
    held_until: float | None = None,
) -> OutboxMessage:
    """The pending outbox record of `message`, the `index`-th one a tick makes at `now`; held (quiet
    hours) until `held_until` when given."""
    blocks = json.dumps(list(message.blocks), ensure_ascii=False) if message.blocks else None
    mentions = [asdict(person) for person in message.mentions]
    return OutboxMessage(
        id=message_id(run_key, rule, channel, events),
        channel=channel,
        run_key=run_key,
        rule=rule,
        seq=int(now * 1000) * 1000 + index,
        title=message.title,
        text=message.text,
        created_at=now,
        blocks_json=blocks,
        event_types=tuple(event.type for event in events),
        mentions_json=json.dumps(mentions, ensure_ascii=False) if mentions else None,
        reply=message.reply,
        held_until=held_until,
        next_attempt_at=held_until or 0.0,
    )


def message_of(stored: OutboxMessage) -> Message:
    """The message a record holds, as a channel sends it."""
    blocks = tuple(json.loads(stored.blocks_json)) if stored.blocks_json else None
    return Message(stored.title, stored.text, blocks, people_of(stored.mentions_json), stored.reply)


_PERSON_FIELDS = frozenset(item.name for item in fields(PersonSettings))


def people_of(mentions_json: str | None) -> tuple[PersonSettings, ...]:
    """The people a record mentions (fields a later version added are ignored, not fatal)."""
    listed = json.loads(mentions_json) if mentions_json else []
    return tuple(
        PersonSettings(**{key: str(value) for key, value in person.items() if key in _PERSON_FIELDS})
        for person in listed
        if isinstance(person, dict) and "id" in person
    )
