"""Queuing each digest rule's daily summary, exactly once a day, from the tick (`dwnotify.digest` is
what a digest says; this is when and how it goes into the outbox).

The ledger (per rule: when dwnotify first saw it, the last day it sent) is the data of the state
store's `digest` lease: the tick that finds a digest due takes that lease, renders the digest for
each of the rule's channels and puts the messages in the tick's own commit, then gives the lease back
with the day recorded. Two ticks at once: one holds the lease, the other leaves the digest to it.
Each digest message's outbox id is made of its rule, channel and day, so even a ledger lost or
written late can never queue a second one (a commit leaves an id it already has as it is).

A process remembers when the next digest can be due, so ticks between two digest times read nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from . import outbox
from .digest import DigestDue, due, render_digest, summarize
from .model import run_key
from .settings import DigestSettings, RuleSettings, Settings
from .state.base import Lease, OutboxMessage, StateStore
from .zones import zone

if TYPE_CHECKING:
    from .render import Renderer

log = logging.getLogger(__name__)

DIGEST_LEASE = "digest"
DIGEST_LEASE_S = 90.0  # as long as a tick's commit may take


@dataclass
class Queued:
    """Digest messages for the tick's commit, and what to record once it is stored."""

    messages: list[OutboxMessage] = field(default_factory=list)
    lease: Lease | None = None
    ledger: dict[str, Any] = field(default_factory=dict)


class DailyDigests:
    """The digests of the settings' rules that have one, for the ticks of one process."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        renderer: Callable[[], Renderer],
        watched: Sequence[int],
    ) -> None:
        self._rules = [(rule, rule.digest) for rule in settings.rules if rule.digest is not None]
        self._settings = settings
        self._store = store
        self._renderer = renderer
        self._watched = tuple(watched)  # every watched workspace, also when a shard sends the digests
        self._next_check = 0.0  # epoch seconds: no digest can be due before it (0: read the ledger)

    def queue(self, owner: str, now: float, index: int) -> Queued:
        """The digests due at `now`, rendered for each channel (message seqs from `index`); the digest
        lease is `owner`'s until `settle`."""
        queued = Queued()
        if not self._rules or now < self._next_check:
            return queued
        lease = self._store.acquire_lease(DIGEST_LEASE, owner, DIGEST_LEASE_S, now)
        if lease is None:
            return queued  # another tick is sending the digests right now
        ledger = {name: dict(entry) for name, entry in lease.data.items() if isinstance(entry, dict)}
        dues: list[tuple[RuleSettings, DigestDue]] = []
        for rule, schedule in self._rules:
            entry = ledger.setdefault(rule.name, {"first_seen": now})
            try:
                found = due(schedule, now, float(entry.get("first_seen", now)), entry.get("last_day"))
            except (TypeError, ValueError):  # a damaged entry: start the rule's ledger afresh
                ledger[rule.name] = entry = {"first_seen": now}
                found = None
            if found is not None:
                dues.append((rule, found))
                entry["last_day"] = found.day
        queued.lease, queued.ledger = lease, ledger
        if dues:
            queued.messages = self._render(dues, now, index)
        self._next_check = min(_next_time(schedule, now) for _, schedule in self._rules)
        return queued

    def settle(self, queued: Queued, stored: bool) -> None:
        """Give the digest lease back: with the ledger when the tick's commit stored its messages."""
        if queued.lease is None:
            return
        if not stored:
            self._next_check = 0.0  # read the ledger again next tick
        self._store.release_lease(queued.lease, queued.ledger if stored else None)

    def _render(
        self, dues: list[tuple[RuleSettings, DigestDue]], now: float, index: int
    ) -> list[OutboxMessage]:
        since = min(found.since for _, found in dues)
        updated = self._store.runs_updated_since(since)
        cursors = self._store.load_cursors(self._watched)
        moving_keys = [run_key(c.project_id, run_id) for c in cursors.values() for run_id in c.active_run_ids]
        moving = list(self._store.load_runs(moving_keys).values()) if moving_keys else []
        labels = {project.id: project.label for project in self._settings.dataworks.projects}
        moment = datetime.fromtimestamp(now, tz=timezone.utc)
        messages: list[OutboxMessage] = []
        for rule, found in dues:
            view = summarize(rule, updated, found, moving, labels)
            for channel_name in rule.channels:
                channel = self._settings.channels[channel_name]
                message, failures = render_digest(
                    self._renderer(),
                    view,
                    rule_name=rule.name,
                    channel_name=channel_name,
                    channel_type=channel.type,
                    now=moment,
                )
                for template, error in failures:
                    log.error("digest: template %r for %s failed: %s", template, channel.type, error)
                messages.append(
                    outbox.record(
                        message,
                        run_key=outbox.digest_key(rule.name, found.day),
                        rule=rule.name,
                        channel=channel_name,
                        events=(),
                        now=now,
                        index=index + len(messages),
                    )
                )
            log.info("digest: rule %s, day %s: %d run(s)", rule.name, found.day, view.runs)
        return messages


def _next_time(schedule: DigestSettings, now: float) -> float:
    """A digest's next time after `now` (epoch seconds)."""
    local = zone(schedule.timezone)
    today = datetime.fromtimestamp(now, local).date()
    for offset in (0, 1, 2):
        day = today + timedelta(days=offset)
        at = datetime.combine(day, schedule.at, tzinfo=local).timestamp()
        if at > now:
            return at
    return now + 86400.0
