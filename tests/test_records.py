"""Outbox records and leases: ids, round trips and the predicates delivery and the stores decide by."""

from __future__ import annotations

import pytest

from dwnotify.message import Message
from dwnotify.model import Event, Stage
from dwnotify.outbox import message_id, message_of, record
from dwnotify.state.base import Lease, OutboxMessage, channel_lease, leased_channel

NOW = 1_795_680_000.0
BUILD = Stage("BUILD", 1, "Build", "构建", "", "fail", "boom")
EVENTS = (
    Event("stage.failed", "10000/r1", "fail", "running", BUILD),
    Event("run.failed", "10000/r1", "fail", "running"),
)


def make(message: Message, index: int = 0, events: tuple[Event, ...] = EVENTS) -> OutboxMessage:
    return record(
        message, run_key="10000/r1", rule="failures", channel="ops", events=events, now=NOW, index=index
    )


def test_an_id_is_the_same_for_the_same_routing_and_differs_for_any_other() -> None:
    base = message_id("10000/r1", "failures", "ops", EVENTS)
    assert base == message_id("10000/r1", "failures", "ops", EVENTS)
    others = {
        message_id("10000/r2", "failures", "ops", EVENTS),
        message_id("10000/r1", "everything", "ops", EVENTS),
        message_id("10000/r1", "failures", "team", EVENTS),
        message_id("10000/r1", "failures", "ops", EVENTS[:1]),
    }
    assert base not in others and len(others) == 4 and len(base) == 32
    # Ids are stored: a formula that changed between versions would store a repeated commit twice.
    assert base == "97900b43f9006e43fd0bf654aa2cab90"


def test_a_record_keeps_the_message_and_orders_by_tick_time_then_index() -> None:
    blocks = ({"type": "section", "text": {"type": "mrkdwn", "text": "失败 *x*"}},)
    first, second = make(Message("t", "text", blocks), 0), make(Message("t2", "text2"), 1)
    assert first.id == message_id("10000/r1", "failures", "ops", EVENTS)
    assert first.blocks_json is not None and "失败" in first.blocks_json  # stored as UTF-8, not \\u escapes
    assert message_of(first) == Message("t", "text", blocks)
    assert message_of(second) == Message("t2", "text2", None)
    assert first.seq == int(NOW * 1000) * 1000 and second.seq == first.seq + 1
    assert (first.channel, first.run_key, first.rule, first.created_at) == (
        "ops",
        "10000/r1",
        "failures",
        NOW,
    )
    assert first.event_types == ("stage.failed", "run.failed") and first.status == "pending"


@pytest.mark.parametrize(
    ("next_attempt_at", "created_at", "unreadable", "due", "expired"),
    [
        (NOW, NOW, "", True, False),  # due at its time exactly
        (NOW + 1, NOW, "", False, False),
        (NOW - 1, NOW - 100, "", True, False),
        (NOW, NOW - 101, "", True, True),  # past max_age (100 s)
        (NOW, NOW - 100, "", True, False),  # at max_age exactly: still sendable
        (NOW, NOW, "bad JSON", True, True),  # unreadable: can never be sent
    ],
)
def test_due_and_expired(
    next_attempt_at: float, created_at: float, unreadable: str, due: bool, expired: bool
) -> None:
    message = OutboxMessage(
        "m", "ops", "10000/r1", "failures", 1, "t", "x", created_at,
        next_attempt_at=next_attempt_at, unreadable=unreadable,
    )  # fmt: skip
    assert message.due(NOW) is due
    assert message.expired(NOW, 100.0) is expired


@pytest.mark.parametrize(
    ("owner", "expires_at", "held_by_a", "held_by_a_now", "bars_a"),
    [
        ("a", NOW + 10, True, True, False),
        ("a", NOW, True, False, False),  # expired at its time exactly
        ("b", NOW + 10, False, False, True),
        ("b", NOW, False, False, False),  # another's, but expired: free to take
        ("", NOW + 10, False, False, False),  # released
    ],
)
def test_lease_predicates(
    owner: str, expires_at: float, held_by_a: bool, held_by_a_now: bool, bars_a: bool
) -> None:
    lease = Lease("tick", owner, expires_at)
    assert lease.held_by("a") is held_by_a
    assert lease.held_by("a", NOW) is held_by_a_now
    assert lease.bars("a", NOW) is bars_a


def test_a_lease_ending_further_ahead_than_twice_its_ttl_was_taken_on_a_clock_stepped_back() -> None:
    assert Lease("tick", "b", NOW + 180.1).from_a_clock_stepped_back(NOW, 90.0)
    assert not Lease("tick", "b", NOW + 180.0).from_a_clock_stepped_back(NOW, 90.0)


def test_channel_lease_names_round_trip_and_the_tick_lease_is_no_channel() -> None:
    assert leased_channel(channel_lease("ops")) == "ops"
    assert channel_lease("ops") != "ops"
    assert leased_channel("tick") is None
