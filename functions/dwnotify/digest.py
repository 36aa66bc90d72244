"""Daily digests: when a rule's digest is due, what it says of the runs since the last one, its message.

A rule with `digest: {at, timezone}` sends one summary a day per channel instead of per-run messages.
Pure: the time, the run states and the renderer are given; nothing here reads a clock or a store.

- `due(settings, now, first_seen, last_day)`: the digest whose time has come, if it is still to send.
  Its day is the local date of the latest digest time at or before `now`, so a missed tick sends it
  late (once) at the next; a time that passed before the rule was first seen is not caught up.
- `summarize(rule, states, due, moving, labels)`: the runs the rule's `events` and `projects` select,
  updated in the digest's window or still moving, per workspace (`DigestView`).
- `render_digest(renderer, view, ...)`: template `digest` for one channel, else plain text with a note.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .channels import CHANNEL_TYPES
from .channels.base import Markup
from .errors import TemplateError
from .message import Message
from .model import CANCELED, FAIL, FINAL_EVENT_NAMES, RUNNING, SUCCESS, TERMINATED, RunState
from .render import Renderer
from .render.fallback import fallback_note
from .rules import matches
from .settings import DigestSettings, RuleSettings
from .text import trim_utf8
from .zones import DEFAULT_TIMEZONE, zone

DIGEST_TEMPLATE = "digest"
# After days without a digest (dwnotify stopped), the next one covers at most this much: older runs
# would crowd out the day's news, and the store keeps only some weeks of them anyway.
MAX_WINDOW = timedelta(days=7)
_FAILED = frozenset({FAIL, TERMINATED, CANCELED})
_MAX_PLAIN_WORKSPACES = 50
_MAX_PLAIN_VALUE_BYTES = 300


# --- when -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestDue:
    """A digest to send: its local `day` (YYYY-MM-DD), its time `at` and the window's start `since`
    (epoch seconds; the previous digest's time)."""

    day: str
    at: float
    since: float


def due(settings: DigestSettings, now: float, first_seen: float, last_day: str | None) -> DigestDue | None:
    """The digest due at `now`: the latest digest time at or before it, unless that time is not after
    `first_seen` (not caught up) or `last_day` (the last day sent) is that day or later."""
    day = datetime.fromtimestamp(now, zone(settings.timezone)).date()
    at = _scheduled(settings, day)
    if at > now:
        day -= timedelta(days=1)
        at = _scheduled(settings, day)
    sent = _day(last_day)
    if at <= first_seen or (sent is not None and sent >= day):
        return None
    previous = sent if sent is not None else day - timedelta(days=1)
    since = max(_scheduled(settings, previous), at - MAX_WINDOW.total_seconds())
    return DigestDue(day.isoformat(), at, since)


def _scheduled(settings: DigestSettings, day: date) -> float:
    """The digest time of a local day (a time the clocks skip is read with the offset before the skip)."""
    return datetime.combine(day, settings.at, tzinfo=zone(settings.timezone)).timestamp()


def _day(text: str | None) -> date | None:
    """A day as the tick keeps it; None for none, or for one that is not a date (sent again, not never)."""
    try:
        return date.fromisoformat(text) if text is not None else None
    except ValueError:
        return None


# --- what -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestRun:
    """One run as a digest shows it: its description and message on one line, times in UTC,
    `duration` from its creation to its end (None while it moves)."""

    id: str
    project_id: int
    status: str
    description: str
    message: str
    created_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    final: bool

    @classmethod
    def of(cls, state: RunState) -> DigestRun:
        """The digest's view of a stored run state."""
        created, finished = _moment(state.create_time_ms), _moment(state.finished_ms)
        duration = None
        if created is not None and finished is not None:
            duration = max(finished - created, timedelta(0))  # clocks disagree: never below zero
        return cls(
            id=state.run_id.strip(),
            project_id=state.project_id,
            status=state.status,
            description=_one_line(state.description),
            message=_one_line(state.message),
            created_at=created,
            finished_at=finished,
            duration=duration,
            final=state.final,
        )


@dataclass(frozen=True)
class WorkspaceDigest:
    """One workspace's runs in a digest: counts, failures, runs still moving, durations of finished runs."""

    project_id: int
    label: str
    runs: int
    succeeded: int
    failures: tuple[DigestRun, ...]  # failed, terminated or canceled, oldest first
    still_running: tuple[DigestRun, ...]  # not final yet, oldest first
    median_duration: timedelta | None
    longest_duration: timedelta | None
    longest: DigestRun | None  # the finished run that took longest

    @property
    def failed(self) -> int:
        """How many runs failed (or were terminated or canceled)."""
        return len(self.failures)

    @property
    def running(self) -> int:
        """How many runs are still moving."""
        return len(self.still_running)


@dataclass(frozen=True)
class DigestView:
    """What a digest template reads (`digest`): the window (UTC datetimes, shown in `timezone`), the
    workspaces (those with failures first) and the totals."""

    day: str
    since: datetime
    at: datetime
    timezone: str
    workspaces: tuple[WorkspaceDigest, ...]

    @property
    def runs(self) -> int:
        """Runs in all workspaces."""
        return sum(workspace.runs for workspace in self.workspaces)

    @property
    def succeeded(self) -> int:
        """Runs that succeeded, in all workspaces."""
        return sum(workspace.succeeded for workspace in self.workspaces)

    @property
    def failed(self) -> int:
        """Runs that failed, in all workspaces."""
        return sum(workspace.failed for workspace in self.workspaces)

    @property
    def running(self) -> int:
        """Runs still moving, in all workspaces."""
        return sum(workspace.running for workspace in self.workspaces)


def event_type(key: str) -> str | None:
    """The event type of an announced key (`run:fail` -> `run.failed`); None for other keys."""
    subject, _, rest = key.partition(":")
    if subject not in ("run", "stage") or not rest:
        return None
    status = rest.rpartition(":")[2] if subject == "stage" else rest  # a stage's code may hold ':'
    if status == RUNNING:
        return f"{subject}.started"
    name = FINAL_EVENT_NAMES.get(status)
    return f"{subject}.{name}" if name else f"{subject}.changed"


def selects(rule: RuleSettings, state: RunState) -> bool:
    """Whether a run is the rule's: in its projects, and announced some event its `events` match."""
    if rule.projects is not None and state.project_id not in rule.projects:
        return False
    types = {kind for key in state.announced if (kind := event_type(key)) is not None}
    return any(matches(pattern, kind) for pattern in rule.events for kind in types)


def summarize(
    rule: RuleSettings,
    states: Sequence[tuple[RunState, float]],
    due: DigestDue,
    moving: Sequence[RunState],
    labels: Mapping[int, str],
) -> DigestView:
    """The digest of the rule's runs updated in [since, at) (`states`: (state, updated at)) and of the
    runs still `moving`, per workspace, named by `labels` (else by id)."""
    chosen: dict[str, RunState] = {}
    for state, updated in states:
        if due.since <= updated < due.at:
            chosen.setdefault(state.key, state)
    for state in moving:
        chosen[state.key] = state  # what moves now is newer than a row read for the window
    by_project: dict[int, list[RunState]] = defaultdict(list)
    for state in chosen.values():
        if selects(rule, state):
            by_project[state.project_id].append(state)
    workspaces = [
        _workspace(project_id, labels.get(project_id) or str(project_id), runs)
        for project_id, runs in by_project.items()
    ]
    workspaces.sort(key=lambda w: (-w.failed, w.label.casefold(), w.project_id))
    return DigestView(
        day=due.day,
        since=_moment_s(due.since),
        at=_moment_s(due.at),
        timezone=rule.digest.timezone if rule.digest is not None else DEFAULT_TIMEZONE,
        workspaces=tuple(workspaces),
    )


def _workspace(project_id: int, label: str, states: Sequence[RunState]) -> WorkspaceDigest:
    runs = sorted((DigestRun.of(state) for state in states), key=lambda run: (_created(run), run.id))
    finished = [run for run in runs if run.duration is not None]
    durations = sorted(run.duration for run in finished if run.duration is not None)
    return WorkspaceDigest(
        project_id=project_id,
        label=label,
        runs=len(runs),
        succeeded=sum(run.status == SUCCESS for run in runs),
        failures=tuple(run for run in runs if run.status in _FAILED),
        still_running=tuple(run for run in runs if not run.final),
        median_duration=_median(durations),
        longest_duration=durations[-1] if durations else None,
        longest=max(finished, key=lambda run: run.duration or timedelta(0), default=None),
    )


def _median(durations: Sequence[timedelta]) -> timedelta | None:
    """The median of sorted durations (of an even count, the mean of the middle two)."""
    if not durations:
        return None
    middle = len(durations) // 2
    if len(durations) % 2:
        return durations[middle]
    return (durations[middle - 1] + durations[middle]) / 2


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _created(run: DigestRun) -> datetime:
    return run.created_at or _EPOCH


def _one_line(text: str) -> str:
    """A description or message on one line: a digest lists each run on a line of its own."""
    return " ".join(text.split())


def _moment(epoch_ms: int | None) -> datetime | None:
    return _EPOCH + timedelta(milliseconds=epoch_ms) if epoch_ms is not None else None


def _moment_s(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


# --- the message ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleView:
    """The `rule` a digest template sees."""

    name: str


@dataclass(frozen=True)
class ChannelView:
    """The `channel` a digest template sees."""

    name: str
    type: str


def render_digest(
    renderer: Renderer,
    view: DigestView,
    *,
    rule_name: str,
    channel_name: str,
    channel_type: str,
    now: datetime,
) -> tuple[Message, list[tuple[str, TemplateError]]]:
    """The digest for one channel from template `digest`; if it fails, plain text with a note saying
    why. Never raises. Returns the message and the failures, (template name, error), for the log.

    The template reads `digest` (a `DigestView`), `rule.name`, `channel.name`, `channel.type`, `now`.
    """
    variables = {
        "digest": view,
        "rule": RuleView(rule_name),
        "channel": ChannelView(channel_name, channel_type),
        "now": now,
    }
    try:
        return renderer.render_variables(channel_type, DIGEST_TEMPLATE, variables, now), []
    except TemplateError as error:
        failures = [(DIGEST_TEMPLATE, error)]
    note = fallback_note(failures, "plain")
    return plain_digest(view, channel_type, note, renderer.limits.output_chars), failures


def plain_digest(view: DigestView, channel_type: str, note: str, max_chars: int) -> Message:
    """The digest's counts as plain text, escaped for the channel and cut short: it cannot fail or grow."""
    known = CHANNEL_TYPES.get(channel_type)
    escape = (known.markup if known else Markup(str)).escape

    def value(text: object) -> str:
        return escape(trim_utf8(str(text).strip(), _MAX_PLAIN_VALUE_BYTES))

    title = f"DataWorks daily digest {view.day}"
    lines = [escape(title)]
    for workspace in view.workspaces[:_MAX_PLAIN_WORKSPACES]:
        counts = (
            f"{workspace.runs} runs, {workspace.succeeded} succeeded, {workspace.failed} failed, "
            f"{workspace.running} running"
        )
        lines.append(f"- {value(workspace.label)}: {counts}")
    if len(view.workspaces) > _MAX_PLAIN_WORKSPACES:
        lines.append(f"- … {len(view.workspaces) - _MAX_PLAIN_WORKSPACES} more workspaces")
    if not view.workspaces:
        lines.append("No runs.")
    lines.append(escape(note))
    return Message(title=title, text="\n".join(lines)[:max_chars])
