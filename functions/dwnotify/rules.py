"""Which events go where: events x rules -> routes (one message per run, rule and channel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .model import Event
from .settings import RuleSettings


def matches(pattern: str, event_type: str) -> bool:
    """True when an event type matches a rule pattern: an exact type, `run.*`, `stage.*` or `*`."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


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

    `now` is when the events are routed (quiet hours depend on it; None: no rule is quiet).
    """
    routes: list[Route] = []
    for rule in rules:
        if rule.projects is not None and project_id not in rule.projects:
            continue
        wanted = tuple(e for e in events if any(matches(p, e.type) for p in rule.events))
        if wanted:
            routes.extend(Route(rule, channel, wanted) for channel in rule.channels)
    return routes
