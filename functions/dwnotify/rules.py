"""Which events go where: events x rules -> routes (one message per run, rule and channel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .model import Event
from .quiet import window_end
from .settings import QuietSettings, RuleSettings


def matches(pattern: str, event_type: str) -> bool:
    """True when an event type matches a rule pattern: an exact type, `run.*`, `stage.*` or `*`."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def excepted(quiet: QuietSettings, event_type: str) -> bool:
    """Whether quiet hours let an event type through at once (it matches a pattern in `except`)."""
    return any(matches(pattern, event_type) for pattern in quiet.except_events)


@dataclass(frozen=True)
class Route:
    """The events of one run that one rule sends to one channel."""

    rule: RuleSettings
    channel: str
    events: tuple[Event, ...]
    held_until: float | None = None  # quiet hours: the message waits until then (epoch seconds)


def route(
    events: Sequence[Event], project_id: int, rules: Sequence[RuleSettings], now: datetime | None = None
) -> list[Route]:
    """Every (rule, channel) that wants some of a run's events, with those events in order.

    `now` is when the events are routed (quiet hours depend on it; None: no rule is quiet). A rule
    in its quiet hours sends its excepted events at once and holds the rest until the window ends.
    A rule with a daily digest makes no routes: its runs are told in the digest.
    """
    routes: list[Route] = []
    for rule in rules:
        if rule.digest is not None:
            continue
        if rule.projects is not None and project_id not in rule.projects:
            continue
        wanted = tuple(e for e in events if any(matches(p, e.type) for p in rule.events))
        for part, held_until in _held(rule, wanted, now):
            routes.extend(Route(rule, channel, part, held_until) for channel in rule.channels)
    return routes


def _held(
    rule: RuleSettings, events: tuple[Event, ...], now: datetime | None
) -> list[tuple[tuple[Event, ...], float | None]]:
    """A rule's events as (events, held until) parts: all at once, or the excepted ones at once and
    the others held until its quiet window ends. Empty parts are left out."""
    quiet = rule.quiet
    parts: list[tuple[tuple[Event, ...], float | None]]
    ends = window_end(quiet, now) if quiet is not None and now is not None else None
    if quiet is None or ends is None:
        parts = [(events, None)]
    else:
        at_once = tuple(e for e in events if excepted(quiet, e.type))
        later = tuple(e for e in events if not excepted(quiet, e.type))
        parts = [(at_once, None), (later, ends.timestamp())]
    return [(part, held_until) for part, held_until in parts if part]
