"""One tick: discover -> diff -> route -> render -> commit (state and outbox at once) -> deliver."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from . import outbox
from .diff import diff
from .discovery import Discoverer, Discovery, Observation, RunSource
from .errors import ConflictError, NotifierError
from .living import REPLY_TEMPLATE, reply_template, wants_reply
from .logs import mask
from .model import FAIL, INIT, Event, Run, RunItem, RunState, kept_items, run_key
from .pacing import CallBudget, Ledger
from .reminders import Due, remind
from .rules import Route, route
from .settings import ProjectSettings, Settings
from .shards import shard_projects
from .state.base import TICK_LEASE, Lease, OutboxMessage, ProjectCursor, StateStore, TickStart

if TYPE_CHECKING:
    from .channels.base import Channel
    from .daily import DailyDigests
    from .message import Message
    from .render import MessageContext, Renderer
    from .settings import ChannelSettings

log = logging.getLogger(__name__)

# Long enough for a slow tick; short enough that a killed tick's claim comes back within two minutes.
TICK_LEASE_S = 90.0
# How long a polling invocation without a deadline (the command line) polls: a minute, as FC's timer.
DEFAULT_INVOCATION_S = 55.0
# The least time a poll is given before the deadline, besides a delivery timeout for its sends (a poll
# takes well under a second; 4 s, not 5, lets a 15 s grid started a moment after FC's start poll at 45 s
# of a 60 s deadline).
POLL_MARGIN_S = 4.0
# How long a polling invocation's tick lease outlasts its deadline: if FC ends it at its timeout, the
# next invocation need not wait the whole TICK_LEASE_S.
HELD_PAST_DEADLINE_S = 30.0
# A shard waits this long for another shard's commit (a few writes) to let go of the tick lease.
SHARD_COMMIT_WAIT_S = 10.0
_BUDGET = "budget"  # the key of the call budget's ledger in the tick lease's data


@dataclass
class _Session:
    """What one invocation's polls share: who they are, the tick lease they hold, the budget ledger."""

    owner: str
    lease: Lease | None = None  # held across polls (a polling loop, or a budgeted poll)
    ledger: Ledger | None = None  # the call budget's, as the held lease's data gave it
    spending: tuple[float, int, bool] | None = None  # a budgeted poll under way: start, calls, active
    active: bool = False  # whether the last poll left runs moving
    waited: bool = False  # whether the last poll found another invocation holding the tick lease
    changed: bool = False  # whether the last poll found a run changed

    def ledger_data(self, lease: Lease) -> dict[str, Any] | None:
        """The lease data to store at its release: the ledger beside what else it holds."""
        if self.ledger is None:
            return None
        return {**lease.data, _BUDGET: self.ledger.to_data()}


def _merged(total: TickSummary, more: TickSummary) -> TickSummary:
    """One invocation's summary over its polls: counts added, the latest poll's state of things."""
    return replace(
        more,
        runs_checked=max(total.runs_checked, more.runs_checked),
        events=total.events + more.events,
        messages_sent=total.messages_sent + more.messages_sent,
        messages_failed=total.messages_failed + more.messages_failed,
        api_calls=total.api_calls + more.api_calls,
        duration_ms=total.duration_ms + more.duration_ms,
        messages_queued=total.messages_queued + more.messages_queued,
        chat_posts=total.chat_posts + more.chat_posts,
        polls=total.polls + more.polls,
        errors=total.errors + more.errors,
    )


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
    polls: int = 1  # DataWorks polls made by this invocation (more than one with `poll_every`)
    poll_skipped: str = ""  # why the daily call budget let this poll wait, when it did

    def to_json(self) -> str:
        """The summary as one line of JSON."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))


def _cursor_moved(previous: ProjectCursor | None, cursor: ProjectCursor) -> bool:
    """Whether a cursor is worth writing: one that says what the stored one says needs no write."""
    return previous is None or not previous.same_listing(cursor)


def _with_reminders(cursor: ProjectCursor, due: Mapping[str, float | None]) -> ProjectCursor:
    """The cursor with the reminder times of its workspace's runs diffed this tick (None: none due)."""
    prefix = f"{cursor.project_id}/"
    changed = {key.removeprefix(prefix): at for key, at in due.items() if key.startswith(prefix)}
    if not changed:
        return cursor
    active = set(cursor.active_run_ids)
    kept = {run_id: at for run_id, at in cursor.reminders.items() if run_id not in changed}
    kept.update({run_id: at for run_id, at in changed.items() if at is not None and run_id in active})
    return replace(cursor, reminders=kept)


def _changed(previous: RunState | None, state: RunState) -> bool:
    if previous is None:
        return True
    return (
        previous.status != state.status
        or previous.stage_statuses != state.stage_statuses
        or previous.announced != state.announced
    )


class BudgetedSource(RunSource, Protocol):
    """A RunSource whose calls can be capped: `call_limit` is what `calls` may not pass (None: no cap).

    It also reads a run's items (what the run deploys) for the messages that show them.
    """

    call_limit: int | None

    def list_run_items(
        self, project: ProjectSettings, run_id: str, *, deadline: float | None = None
    ) -> tuple[RunItem, ...]:
        """Every item of a run, no request outlasting `deadline`."""
        ...


def _wants_items(previous: RunState | None, events: Sequence[Event]) -> bool:
    """Whether a run's message is worth its items: its first message, or its first failure.

    Both are told from what the stored state had announced, so a later tick, a retry or a second
    tick at once asks again only as often as it would announce again: at most twice a run.
    """
    announced = previous.announced if previous is not None else frozenset()
    if not announced:
        return True
    failed_before = any(key.endswith(f":{FAIL}") for key in announced)
    return not failed_before and any(event.status == FAIL for event in events)


class Notifier:
    """Holds what outlives one tick (clients, renderer, store) so warm FC invocations reuse it."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: BudgetedSource,
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
        self._daily: DailyDigests | None = None
        self._clock = clock
        self._sleep = sleep
        budget = settings.dataworks.daily_call_budget
        self._budget = CallBudget(budget) if budget is not None else None
        self._sharded = False  # one of several invocations polling at once (`shard`)
        self._sends_digests = True
        self._watched = tuple(project.id for project in settings.dataworks.projects)

    def shard(self, index: int, of: int) -> Notifier:
        """A notifier for shard `index` of `of` (`dwnotify.shards`), sharing this one's clients and store.

        It polls only its slice of the workspaces (the config's `runs` and the daily digests go with
        shard 0), alongside the other shards: a tick lease held by another shard (a commit) does not
        make it skip its discovery, and its own commit waits for the lease. Compare-and-set commits
        keep every event announced once.
        """
        dataworks = self.settings.dataworks
        part = replace(
            dataworks,
            projects=shard_projects(dataworks.projects, index, of),
            runs=dataworks.runs if index == 0 else (),
        )
        clone = Notifier(
            replace(self.settings, dataworks=part),
            source=self._source,
            store=self._store,
            make_channel=self._make_channel,
            renderer=lambda: self.renderer,
            clock=self._clock,
            sleep=self._sleep,
        )
        clone._sharded, clone._sends_digests, clone._watched = True, index == 0, self._watched
        clone._daily = self._daily
        return clone

    @property
    def renderer(self) -> Renderer:
        """The template renderer, built (and Jinja2 imported) at the first message."""
        if self._renderer is None:
            self._renderer = self._make_renderer()
        return self._renderer

    def tick(self, *, deadline: float | None = None, dry_run: bool = False) -> TickSummary:
        """Run one tick (one poll); `deadline` (epoch seconds) stops new work so the next tick can take it.

        Discovery takes no lease: a tick that finds nothing new writes nothing at all. One that has
        something to store takes the tick lease for its commit only; run states and cursors are
        compare-and-set, so of two ticks that discovered the same change one commits it and the other
        commits nothing. A tick that finds the lease held (a commit under way, or an invocation polling
        in a loop) leaves discovery to its holder and only delivers.
        """
        session = _Session(uuid.uuid4().hex)
        try:
            return self._poll(session, deadline, dry_run)
        finally:
            self._end(session)

    def run(self, *, deadline: float | None = None, dry_run: bool = False) -> TickSummary:
        """One invocation: a tick and, with `dataworks.poll_every`, more polls while runs move.

        The polls go on every `poll_every` until the next could not end before `deadline` (without one,
        DEFAULT_INVOCATION_S from now), holding the tick lease meanwhile so that an invocation started
        by the next timer only delivers. An idle invocation returns after its first poll.
        """
        every = self.settings.dataworks.poll_every
        if every is None or dry_run:
            return self.tick(deadline=deadline, dry_run=dry_run)
        started = self._clock()
        end = deadline if deadline is not None else started + DEFAULT_INVOCATION_S
        session = _Session(uuid.uuid4().hex)
        try:
            total = self._poll(session, end, dry_run=False)
            last, polls = started, 1
            # Another invocation polling (the previous timer's, finishing its last poll) is waited for:
            # it lets go before long, and then this one polls in its place.
            while session.active or session.waited:
                took = self._clock() - last
                # On the invocation's own grid (0, 15, 30 s...), so that small delays do not add up.
                next_at = max(started + polls * every.total_seconds(), self._clock())
                # Room for the poll and for delivering what it finds (a send starts only if it can end).
                if (
                    next_at + max(POLL_MARGIN_S, 2 * took) + self.settings.delivery.timeout.total_seconds()
                    > end
                ):
                    break
                renew = session.lease is None or session.lease.expires_at < end
                if session.active and renew and not self._hold(session, end):
                    session.waited = True  # taken meanwhile: wait for it as above
                self._sleep(max(0.0, next_at - self._clock()))
                last, polls = self._clock(), polls + 1
                total = _merged(total, self._poll(session, end, dry_run=False))
            return total
        finally:
            self._end(session)

    def track(self, project_id: int, run_id: str, *, deadline: float | None = None) -> TickSummary:
        """Track one run from now on, whatever its age, and announce at once what it shows.

        A run never stored, or stored silently as history, is announced as at first sight; one already
        announced gets only its news. Its workspace's cursor gains it among the runs still moving (when
        dwnotify watches that workspace), so the ticks after poll it until it is final. The tick lease
        is waited for (an invocation polling every `poll_every` lets go within its minute).
        """
        session = _Session(uuid.uuid4().hex)
        started, calls_before = self._clock(), self._source.calls
        summary = TickSummary()
        try:
            project = self.settings.dataworks.project(project_id)
            run = self._source.get_run(project, run_id, deadline=deadline)
            if run is None:
                raise NotifierError(f"run {run_key(project_id, run_id)}: DataWorks does not know it")
            session.lease = self._wait_for_lease(session, deadline)
            now = self._clock()
            stored = self._store.load_runs([run.key]).get(run.key)
            if stored is None or stored.silent:  # as at first sight, at the stored version
                base = RunState(
                    project_id, run.id, INIT, {}, frozenset(), version=stored.version if stored else 0
                )
            else:
                base = stored
            found = Discovery(observations=[Observation(run, base, silent=False)], runs_fetched=1)
            cursor = self._store.load_cursors([project_id]).get(project_id)
            if cursor is not None and not run.final and run.id not in cursor.active_run_ids:
                # Among the runs still moving, with its stored state's fingerprint: so the ticks after
                # poll it even when no page lists it, and diff it even once it ends, however old it is.
                prints = (
                    None if cursor.fingerprints is None else {**cursor.fingerprints, run.id: run.fingerprint}
                )
                moving = (*cursor.active_run_ids, run.id)
                found.cursors = [replace(cursor, active_run_ids=moving, fingerprints=prints)]
            summary.runs_checked = 1
            states, messages, events_found, _ = self._diff_and_render(found, now, summary, deadline)
            self._store.commit(session.lease, states, found.cursors, messages, self._clock())
            summary.events, summary.messages_queued = events_found, len(messages)
            if cursor is None and not run.final:
                summary.errors.append(
                    f"workspace {project_id} is not watched (dataworks.projects): the run is announced "
                    "now, but its later changes only if it is also listed in dataworks.runs"
                )
        finally:
            self._end(session)
        self._deliver(session.owner, summary, deadline)
        return self._finish(summary, started, calls_before)

    def _wait_for_lease(self, session: _Session, deadline: float | None) -> Lease:
        """The tick lease, waited for until `deadline` (or DEFAULT_INVOCATION_S) while another holds it."""
        end = deadline if deadline is not None else self._clock() + DEFAULT_INVOCATION_S
        while True:
            lease = self._store.acquire_lease(TICK_LEASE, session.owner, TICK_LEASE_S, self._clock())
            if lease is not None:
                return lease
            if self._clock() + 1.0 >= end:
                raise NotifierError("another invocation held the tick lease until the deadline; try again")
            self._sleep(1.0)

    def _hold(self, session: _Session, end: float) -> bool:
        """Take the tick lease for the rest of a polling invocation; False when another tick has it."""
        session.lease = self._store.acquire_lease(
            TICK_LEASE, session.owner, end - self._clock() + HELD_PAST_DEADLINE_S, self._clock()
        )
        if session.lease is None:
            return False
        if session.ledger is None:  # a ledger this session settled is newer than the stored one
            session.ledger = Ledger.from_data(session.lease.data.get(_BUDGET))
        return True

    def _end(self, session: _Session) -> None:
        """Give back what a session still holds: the tick lease, with its budget ledger."""
        if session.lease is not None:
            lease, session.lease = session.lease, None
            self._store.release_lease(lease, session.ledger_data(lease))

    def _poll(self, session: _Session, deadline: float | None, dry_run: bool) -> TickSummary:
        started = self._clock()
        calls_before = self._source.calls
        summary = TickSummary()
        failure: NotifierError | None = None
        try:
            self._discover_and_commit(session, summary, deadline, dry_run=dry_run)
        except NotifierError as error:
            failure = error  # what is already in the outbox still goes out
        except Exception as error:  # an answer no parser foresaw, or a bug: the outbox still goes out
            log.error("tick: discovery failed unexpectedly", exc_info=error)
            failure = NotifierError(f"discovery failed ({type(error).__name__}; see the log)")
        finally:
            self._source.call_limit = None
        if dry_run:  # reads only: nothing stored or sent
            if failure is not None:
                raise failure
            return self._finish(summary, started, calls_before)
        self._deliver(session.owner, summary, deadline)
        if failure is not None:
            raise failure
        return self._finish(summary, started, calls_before)

    def _finish(self, summary: TickSummary, started: float, calls_before: int) -> TickSummary:
        # An error a service or the API sent back may quote a URL with its token.
        summary.errors = [mask(error) for error in summary.errors]
        summary.api_calls = self._source.calls - calls_before
        summary.duration_ms = int((self._clock() - started) * 1000)
        return summary

    def _moving(self, cursors: Iterable[ProjectCursor]) -> bool:
        """Whether runs may still move before a poll: a workspace lists some, or the config names runs
        (whether those are final is known only once they are polled)."""
        return bool(self.settings.dataworks.runs) or any(cursor.active_run_ids for cursor in cursors)

    def _min_cost(self) -> int:
        """The fewest calls a poll can cost: a list per workspace, a get per run the config names."""
        return max(1, len(self.settings.dataworks.projects) + len(self.settings.dataworks.runs))

    def _spend_allowed(self, session: _Session, start: TickStart, now: float, summary: TickSummary) -> bool:
        """With a daily call budget: whether this poll may call DataWorks, and then its cap set on the
        client and reserved in the ledger (so a poll that dies mid-way still counts what it may spend).

        The decision is made from the ledger the first read gave (a poll skipped writes nothing), then
        again under the tick lease, which serialises budgeted polls across invocations.
        """
        budget = self._budget
        if budget is None:
            return True
        active = self._moving(start.cursors.values())
        if session.lease is None:
            stored = start.tick_lease.data if start.tick_lease is not None else {}
            first = budget.decide(
                Ledger.from_data(stored.get(_BUDGET)), now, active=active, min_cost=self._min_cost()
            )
            if not first.poll:
                summary.poll_skipped = first.reason
                return False
            session.lease = self._store.acquire_lease(TICK_LEASE, session.owner, TICK_LEASE_S, now)
            if session.lease is None:
                summary.discovery_skipped = True
                return False
            session.ledger = Ledger.from_data(session.lease.data.get(_BUDGET))
        decision = budget.decide(session.ledger, now, active=active, min_cost=self._min_cost())
        if not decision.poll:
            summary.poll_skipped = decision.reason
            return False
        reserved = budget.spend(session.ledger, now, decision.cap, active=active)
        self._store.keep_lease_data(
            replace(session.lease, data={**session.lease.data, _BUDGET: reserved.to_data()})
        )
        session.spending = (now, self._source.calls, active)
        self._source.call_limit = self._source.calls + decision.cap
        return True

    def _settle(self, session: _Session) -> None:
        """Record in the session's ledger what the poll really cost (kept at the session's end)."""
        if self._budget is None or session.spending is None:
            return
        at, calls_before, active = session.spending
        session.spending = None
        calls = self._source.calls - calls_before
        moving = active or session.active or session.changed
        session.ledger = self._budget.spend(session.ledger, at, calls, active=moving)

    def _discover_and_commit(
        self, session: _Session, summary: TickSummary, deadline: float | None, *, dry_run: bool
    ) -> None:
        """Discover, diff, route and render; store it all unless this is a dry run."""
        now = self._clock()
        ids = [project.id for project in self.settings.dataworks.projects]
        start = self._store.open_tick(ids, now)
        session.active = session.waited = session.changed = False
        if start.busy(session.owner, now) and not dry_run and not self._sharded:
            summary.discovery_skipped = session.waited = True
            log.info("tick: another tick holds the tick lease; only delivering")
            return
        if not dry_run and not self._spend_allowed(session, start, now, summary):
            session.waited = summary.discovery_skipped
            return
        try:
            found = self._discover(start, now, deadline)
        except BaseException:
            self._settle(session)
            raise
        # After a poll the config's runs are known: only those not yet final keep it polling.
        tracked = {run_key(run.project, run.id) for run in self.settings.dataworks.runs}
        session.active = any(c.active_run_ids for c in found.cursors) or any(
            o.run.key in tracked and not o.run.final for o in found.observations
        )
        session.changed = bool(found.observations)  # runs new or moved (a run that started and ended too)
        summary.errors.extend(found.errors)
        summary.runs_checked = found.runs_fetched
        try:  # the items read for the messages are this poll's calls too
            states, messages, events_found, undiffed = self._diff_and_render(found, now, summary, deadline)
        finally:
            self._settle(session)
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
            if c.project_id not in undiffed and _cursor_moved(start.cursors.get(c.project_id), c)
        ]
        daily = self._digests()
        digests = daily.queue(session.owner, now, len(messages)) if daily else None
        messages += digests.messages if digests else []
        stored = False
        try:
            stored = self._commit(session, states, moved, messages, summary)
            if stored:  # counted once stored: of ticks that found the same change, the one that stores it
                summary.events, summary.messages_queued = events_found, len(messages)
        finally:
            if daily is not None and digests is not None:
                daily.settle(digests, stored or not digests.messages)

    def _commit(
        self,
        session: _Session,
        states: list[RunState],
        moved: list[ProjectCursor],
        messages: list[OutboxMessage],
        summary: TickSummary,
    ) -> bool:
        """Store the tick's findings under the tick lease; whether they were stored (also: nothing to)."""
        if not (states or moved or messages):
            return True
        held = session.lease
        lease = held or self._store.acquire_lease(TICK_LEASE, session.owner, TICK_LEASE_S, self._clock())
        waited = 0.0
        while lease is None and self._sharded and waited < SHARD_COMMIT_WAIT_S:  # another shard commits
            self._sleep(0.2)
            waited += 0.2
            lease = self._store.acquire_lease(TICK_LEASE, session.owner, TICK_LEASE_S, self._clock())
        if lease is None:
            summary.errors.append("another tick was committing; nothing committed, the next tick tries again")
            return False
        try:
            self._store.commit(lease, states, moved, messages, self._clock())
            return True
        except ConflictError as error:
            log.warning("tick: nothing committed, another tick got there first: %s", error)
            summary.errors.append(str(error))
            return False
        finally:
            if held is None:
                self._store.release_lease(lease)

    def _digests(self) -> DailyDigests | None:
        """The daily digests of this process, if a rule has one (built, and the renderer imported,
        at the first tick that asks)."""
        if not self._sends_digests:
            return None
        if self._daily is None and any(rule.digest is not None for rule in self.settings.rules):
            from .daily import DailyDigests

            self._daily = DailyDigests(self.settings, self._store, lambda: self.renderer, self._watched)
        return self._daily

    def _discover(self, start: TickStart, now: float, deadline: float | None) -> Discovery:
        discoverer = Discoverer(
            self.settings.dataworks,
            self._source,
            self._store,
            self._clock,
            retention_s=self.settings.state.retention.total_seconds(),
            deadline=deadline,
        )
        return discoverer.discover(start.cursors, now)

    def _diff_and_render(
        self, found: Discovery, now: float, summary: TickSummary, deadline: float | None = None
    ) -> tuple[list[RunState], list[OutboxMessage], int, set[int]]:
        """The states to store, the messages to queue, how many events, and the workspaces with a run
        that could not be compared."""
        states: list[RunState] = list(found.vanished)
        messages: list[OutboxMessage] = []
        events_found = 0
        undiffed: set[int] = set()
        reminders_due: dict[str, float | None] = {}  # run key -> when its next reminder falls due
        for observation in found.observations:
            try:
                events, state = diff(observation.previous, observation.run, now)
                if self.settings.reminders is not None and not observation.silent:
                    due = self._remind(state, observation.run, now)
                    events, state = [*events, *due.events], due.state
                    reminders_due[observation.run.key] = due.next_at
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
            # Silent history stays marked so until it has news: `track` announces such a run afresh.
            silent = observation.silent and (observation.previous is None or observation.previous.silent)
            state = replace(state, silent=silent)
            routes: list[Route] = []
            items: tuple[RunItem, ...] = ()
            if not observation.silent and events:
                events_found += len(events)
                self._log_events(observation, events)
                moment = datetime.fromtimestamp(now, tz=timezone.utc)
                routes = route(events, observation.run.project_id, self.settings.rules, moment)
                if routes and self.settings.dataworks.items and _wants_items(observation.previous, events):
                    items = self._items(observation.run, deadline, summary)
                    state = replace(state, items=kept_items(items)) if items else state
            if _changed(observation.previous, state):
                states.append(state)
            messages.extend(self._render(observation.run, state, routes, now, len(messages), summary, items))
        found.cursors = [_with_reminders(cursor, reminders_due) for cursor in found.cursors]
        return states, messages, events_found, undiffed

    def _remind(self, state: RunState, run: Run, now: float) -> Due:
        """The reminders of a run just diffed (`dwnotify.reminders`), by the config's thresholds."""
        settings = self.settings.reminders
        assert settings is not None
        return remind(state, run, settings.waiting_after, settings.stuck_after, settings.repeat, now)

    def _items(self, run: Run, deadline: float | None, summary: TickSummary) -> tuple[RunItem, ...]:
        """The run's items for its messages; none (and an error in the summary) when they cannot be read."""
        project = self.settings.dataworks.project(run.project_id)
        try:
            return self._source.list_run_items(project, run.id, deadline=deadline)
        except Exception as error:  # the message still goes out without its items, whatever went wrong
            log.warning(
                "dataworks: the items of run %s are left out of its message: %s: %s",
                run.key,
                type(error).__name__,
                error,
                extra={"run_id": run.id, "project_id": run.project_id},
            )
            summary.errors.append(f"run {run.key}: items not read: {error}")
            return ()

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
        self,
        run: Run,
        state: RunState,
        routes: Sequence[Route],
        now: float,
        offset: int,
        summary: TickSummary,
        items: tuple[RunItem, ...] = (),
    ) -> list[OutboxMessage]:
        from .channels import CHANNEL_TYPES
        from .render import MessageContext

        project = self.settings.dataworks.project(run.project_id)
        link = project.console_url(self.settings.dataworks.console_url, run.id)
        messages = []
        person = self.settings.person(run.creator)
        for index, item in enumerate(routes, start=offset):
            channel = self.settings.channels[item.channel]
            mentioned = person if person is not None and item.rule.mention == "creator" else None
            mention = CHANNEL_TYPES[channel.type].mention(mentioned) if mentioned is not None else ""
            # A living message shows the whole run at every edit: what it deploys too, as last read.
            shown = items or (state.items if CHANNEL_TYPES[channel.type].living else ())
            context = MessageContext(
                run=run,
                events=item.events,
                project=project,
                rule_name=item.rule.name,
                channel_name=channel.name,
                channel_type=channel.type,
                console_url=link,
                now=datetime.fromtimestamp(now, tz=timezone.utc),
                items=shown,
                person=person,
                mention=mention,
                stage_since=state.stage_since,
                stage_started=state.stage_started,
            )
            rendered = self._render_safely(item.rule.template, context, summary)
            if CHANNEL_TYPES[channel.type].living and wants_reply(item.events):
                exists = partial(self.renderer.exists, channel.type)
                name = reply_template(item.rule.template, exists)
                reply = self._render_safely(name, context, summary, REPLY_TEMPLATE)
                rendered = replace(rendered, reply=reply.text)
            if mentioned is not None and mention:  # DingTalk lists its mentions beside the text (`at`)
                rendered = replace(rendered, mentions=(mentioned,))
            rendered = self._with_offers(rendered, run, channel)
            messages.append(
                outbox.record(
                    rendered,
                    run_key=run.key,
                    rule=item.rule.name,
                    channel=item.channel,
                    events=item.events,
                    now=now,
                    index=index,
                    held_until=item.held_until,
                )
            )
        return messages

    def _with_offers(self, message: Message, run: Run, channel: ChannelSettings) -> Message:
        """The message with buttons for what the run offers, where clicks come back signed."""
        from .actions import offers
        from .channels import CHANNEL_TYPES

        with_offers = CHANNEL_TYPES[channel.type].with_offers
        if with_offers is None or not channel.options.get("signing_secret"):
            return message
        offered = offers(run, self.settings.actions)
        return with_offers(message, offered) if offered else message

    def _render_safely(
        self, template: str, context: MessageContext, summary: TickSummary, fallback: str = "default"
    ) -> Message:
        """The rule's template; if it fails on these events, `default`, then plain text, with a note.

        One broken or runaway template must not hold back every message behind it, tick after tick:
        each render is bounded in time and size (`dwnotify.sandbox`), the fallbacks too.
        """
        rendered, failures = self.renderer.render_or_fall_back(
            context.channel_type, template, context, fallback
        )
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
