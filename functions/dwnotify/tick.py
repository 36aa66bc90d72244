"""One tick: discover -> diff -> route -> render -> commit (state and outbox at once) -> deliver."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import outbox
from .diff import diff
from .discovery import Discoverer, Observation, RunSource
from .errors import ConflictError, NotifierError
from .logs import mask
from .model import Event, Run, RunState
from .rules import Route, route
from .settings import Settings
from .state.base import TICK_LEASE, OutboxMessage, ProjectCursor, StateStore

if TYPE_CHECKING:
    from .channels.base import Channel
    from .message import Message
    from .render import MessageContext, Renderer
    from .settings import ChannelSettings

log = logging.getLogger(__name__)

# Long enough for a slow tick; short enough that a killed tick's claim comes back within two minutes.
TICK_LEASE_S = 90.0


@dataclass
class TickSummary:
    """The one line of JSON a tick prints (and the FC handler returns)."""

    runs_checked: int = 0
    events: int = 0
    messages_sent: int = 0
    messages_failed: int = 0
    messages_pending: int = 0
    api_calls: int = 0
    duration_ms: int = 0
    messages_queued: int = 0
    chat_posts: int = 0
    discovery_skipped: bool = False
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The summary as one line of JSON."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))


def _cursor_moved(previous: ProjectCursor | None, cursor: ProjectCursor) -> bool:
    """Whether a cursor is worth writing: one that says what the stored one says needs no write."""
    return previous is None or not previous.same_listing(cursor)


def _changed(previous: RunState | None, state: RunState) -> bool:
    if previous is None:
        return True
    return (
        previous.status != state.status
        or previous.stage_statuses != state.stage_statuses
        or previous.announced != state.announced
    )


class Notifier:
    """Holds what outlives one tick (clients, renderer, store) so warm FC invocations reuse it."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: RunSource,
        store: StateStore,
        make_channel: Callable[[ChannelSettings], Channel],
        renderer: Callable[[], Renderer],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._source = source
        self._store = store
        self._make_channel = make_channel
        self._make_renderer = renderer
        self._renderer: Renderer | None = None
        self._clock = clock
        self._sleep = sleep

    @property
    def renderer(self) -> Renderer:
        """The template renderer, built (and Jinja2 imported) at the first message."""
        if self._renderer is None:
            self._renderer = self._make_renderer()
        return self._renderer

    def tick(self, *, deadline: float | None = None, dry_run: bool = False) -> TickSummary:
        """Run one tick; `deadline` (epoch seconds) stops new work so the next tick can take it.

        Discovery takes no lease: a tick that finds nothing new writes nothing at all. One that has
        something to store takes the tick lease for its commit only; run states and cursors are
        compare-and-set, so of two ticks that discovered the same change one commits it and the other
        commits nothing. A tick that finds the lease held (a commit under way, or an invocation polling
        in a loop) leaves discovery to its holder and only delivers.
        """
        started = self._clock()
        calls_before = self._source.calls
        owner = uuid.uuid4().hex
        summary = TickSummary()
        failure: NotifierError | None = None
        try:
            self._discover_and_commit(owner, summary, deadline, dry_run=dry_run)
        except NotifierError as error:
            failure = error  # what is already in the outbox still goes out
        except Exception as error:  # an answer no parser foresaw, or a bug: the outbox still goes out
            log.error("tick: discovery failed unexpectedly", exc_info=error)
            failure = NotifierError(f"discovery failed ({type(error).__name__}; see the log)")
        if dry_run:  # reads only: nothing stored or sent
            if failure is not None:
                raise failure
            return self._finish(summary, started, calls_before)
        self._deliver(owner, summary, deadline)
        if failure is not None:
            raise failure
        return self._finish(summary, started, calls_before)

    def _finish(self, summary: TickSummary, started: float, calls_before: int) -> TickSummary:
        # An error a service or the API sent back may quote a URL with its token.
        summary.errors = [mask(error) for error in summary.errors]
        summary.api_calls = self._source.calls - calls_before
        summary.duration_ms = int((self._clock() - started) * 1000)
        return summary

    def _discover_and_commit(
        self, owner: str, summary: TickSummary, deadline: float | None, *, dry_run: bool
    ) -> None:
        """Discover, diff, route and render; store it all unless this is a dry run."""
        now = self._clock()
        ids = [project.id for project in self.settings.dataworks.projects]
        start = self._store.open_tick(ids, now)
        if start.busy(owner, now) and not dry_run:
            summary.discovery_skipped = True
            log.info("tick: another tick holds the tick lease; only delivering")
            return
        cursors = start.cursors
        discoverer = Discoverer(
            self.settings.dataworks,
            self._source,
            self._store,
            self._clock,
            retention_s=self.settings.state.retention.total_seconds(),
            deadline=deadline,
        )
        found = discoverer.discover(cursors, now)
        summary.errors.extend(found.errors)
        summary.runs_checked = found.runs_fetched
        states: list[RunState] = list(found.vanished)
        messages: list[OutboxMessage] = []
        events_found = 0
        undiffed: set[int] = set()  # workspaces with a run that could not be compared
        for observation in found.observations:
            try:
                events, state = diff(observation.previous, observation.run)
            except Exception as error:  # one malformed run must not silence every other run
                log.warning(
                    "run %s skipped this tick, it cannot be compared: %s: %s",
                    observation.run.key,
                    type(error).__name__,
                    error,
                    extra={"run_id": observation.run.id, "project_id": observation.run.project_id},
                )
                summary.errors.append(f"run {observation.run.key}: cannot be compared")
                undiffed.add(observation.run.project_id)
                continue
            if _changed(observation.previous, state):
                states.append(state)
            if observation.silent or not events:
                continue
            events_found += len(events)
            self._log_events(observation, events)
            routes = route(events, observation.run.project_id, self.settings.rules)
            messages.extend(self._render(observation.run, routes, now, len(messages), summary))
        if dry_run:
            summary.events, summary.messages_queued = events_found, len(messages)
            for message in messages:
                log.info("dry run: would send to %s: %s", message.channel, message.title)
            return
        # The cursor of a workspace with a run left uncompared stays as it was: its old fingerprints
        # and active runs make the next tick read that run again.
        moved = [
            c
            for c in found.cursors
            if c.project_id not in undiffed and _cursor_moved(cursors.get(c.project_id), c)
        ]
        if not (states or moved or messages):
            return
        lease = self._store.acquire_lease(TICK_LEASE, owner, TICK_LEASE_S, self._clock())
        if lease is None:
            summary.errors.append("another tick was committing; nothing committed, the next tick tries again")
            return
        try:
            self._store.commit(lease, states, moved, messages, self._clock())
            # Counted once stored: of ticks that found the same change, only the one that commits it.
            summary.events, summary.messages_queued = events_found, len(messages)
        except ConflictError as error:
            log.warning("tick: nothing committed, another tick got there first: %s", error)
            summary.errors.append(str(error))
        finally:
            self._store.release_lease(lease)

    @staticmethod
    def _log_events(observation: Observation, events: Sequence[Event]) -> None:
        run = observation.run
        for event in events:
            log.info(
                "event %s",
                event.type,
                extra={"run_id": run.id, "project_id": run.project_id, "status": event.status},
            )

    def _render(
        self, run: Run, routes: Sequence[Route], now: float, offset: int, summary: TickSummary
    ) -> list[OutboxMessage]:
        from .render import MessageContext

        project = self.settings.dataworks.project(run.project_id)
        link = project.console_url(self.settings.dataworks.console_url, run.id)
        messages = []
        for index, item in enumerate(routes, start=offset):
            channel = self.settings.channels[item.channel]
            context = MessageContext(
                run=run,
                events=item.events,
                project=project,
                rule_name=item.rule.name,
                channel_name=channel.name,
                channel_type=channel.type,
                console_url=link,
                now=datetime.fromtimestamp(now, tz=timezone.utc),
            )
            rendered = self._render_safely(item.rule.template, context, summary)
            messages.append(
                outbox.record(
                    rendered,
                    run_key=run.key,
                    rule=item.rule.name,
                    channel=item.channel,
                    events=item.events,
                    now=now,
                    index=index,
                )
            )
        return messages

    def _render_safely(self, template: str, context: MessageContext, summary: TickSummary) -> Message:
        """The rule's template; if it fails on these events, `default`, then plain text, with a note.

        One broken or runaway template must not hold back every message behind it, tick after tick:
        each render is bounded in time and size (`dwnotify.sandbox`), the fallbacks too.
        """
        rendered, failures = self.renderer.render_or_fall_back(context.channel_type, template, context)
        for name, error in failures:
            problem = f"template {name!r} for {context.channel_type} failed on run {context.run.id}: {error}"
            where = {"run_id": context.run.id, "project_id": context.run.project_id}
            log.error("render: %s", problem, extra=where)
            summary.errors.append(problem)
        return rendered

    def _deliver(self, owner: str, summary: TickSummary, deadline: float | None) -> None:
        from .delivery import Deliverer

        deliverer = Deliverer(
            self._store,
            self.settings.channels,
            self._make_channel,
            owner=owner,
            clock=self._clock,
            sleep=self._sleep,
            max_age_s=self.settings.delivery.max_age.total_seconds(),
            send_timeout_s=self.settings.delivery.timeout.total_seconds(),
        )
        stats = deliverer.deliver(deadline)
        summary.messages_sent = stats.sent
        summary.messages_failed = stats.failed
        summary.chat_posts = stats.posts
        summary.messages_pending = stats.pending


def summary_dict(summary: TickSummary) -> dict[str, Any]:
    """The summary as a plain dict (what the FC handler returns)."""
    return asdict(summary)
