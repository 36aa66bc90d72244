"""The view model a template is rendered from: a message's context, the run as it sees it, the headline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from dwnotify.model import (
    CANCELED,
    FAIL,
    INIT,
    RUNNING,
    SUCCESS,
    TERMINATED,
    Event,
    Run,
    RunItem,
    Stage,
    is_final,
)
from dwnotify.settings import PersonSettings, ProjectSettings


@dataclass(frozen=True)
class MessageContext:
    """Everything one message is rendered from: a run, its events for one rule and channel, and where."""

    run: Run
    events: tuple[Event, ...]
    project: ProjectSettings
    rule_name: str
    channel_name: str
    channel_type: str
    console_url: str
    now: datetime
    items: tuple[RunItem, ...] = ()  # read for this message only (first announcement, failures)
    person: PersonSettings | None = None  # the run's creator in the `people` map, if listed
    mention: str = ""  # the live mention of the creator in the channel's markup, when the rule asks
    stage_since: Mapping[str, float] = field(default_factory=dict)  # `RunState.stage_since`
    stage_started: Mapping[str, float] = field(default_factory=dict)  # `RunState.stage_started`


class Url(str):
    """A URL from the settings (the console link): escaped as a link target, not as text."""

    __slots__ = ()


class Mention(str):
    """A live mention dwnotify wrote in the channel's markup (`mention`): output as it is."""

    __slots__ = ()


@dataclass(frozen=True)
class StageView(Stage):
    """A stage as a template sees it: plus `since` (when dwnotify first saw its status), `started_at`
    (when it first saw it running) and `duration` (started to finished, or to now while it runs).

    DataWorks gives stages no times, so these are dwnotify's sightings, as exact as its polling;
    None when not seen (a stage that went from init to success between two polls has no duration)."""

    since: datetime | None = None
    started_at: datetime | None = None
    duration: timedelta | None = None

    @classmethod
    def of(
        cls,
        stage: Stage,
        since: float | None,
        started: float | None,
        now: datetime,
        run_span: tuple[datetime | None, datetime | None] = (None, None),
    ) -> StageView:
        """The view of `stage` from its first-seen times (epoch seconds).

        Its duration lies within `run_span`, the run's creation and (once it is final) its end as
        DataWorks reports them: a sighting is up to a poll late, the run's own times are not.
        """
        values = {item.name: getattr(stage, item.name) for item in fields(Stage)}
        seen, began = _moment(since), _moment(started)
        duration = None
        if began is not None and stage.status != INIT:
            end = seen if is_final(stage.status) and seen is not None else now
            created, ended = run_span
            start = max(began, created) if created is not None else began
            end = min(end, ended) if ended is not None else end
            duration = max(end - start, timedelta(0))
        return cls(**values, since=seen, started_at=began, duration=duration)


def _moment(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc) if epoch is not None else None


@dataclass(frozen=True)
class RunView(Run):
    """The `run` a template sees: Id trimmed, stages (`StageView`s) in Step order, plus `console_url`,
    `duration` (of a finished run), `elapsed` (since it was created, while it runs), `items` (what it
    deploys, the failed ones first; empty when they were not read for this message) and
    `creator_person` (the creator's `people` entry, or None)."""

    console_url: str = ""
    duration: timedelta | None = None
    elapsed: timedelta | None = None
    items: tuple[RunItem, ...] = ()
    creator_person: PersonSettings | None = None

    @property
    def failed_items(self) -> tuple[RunItem, ...]:
        """The items whose deployment failed."""
        return tuple(item for item in self.items if item.failed)

    @classmethod
    def of(
        cls,
        run: Run,
        console_url: str,
        items: Sequence[RunItem] = (),
        creator_person: PersonSettings | None = None,
        *,
        now: datetime | None = None,
        stage_since: Mapping[str, float] | None = None,
        stage_started: Mapping[str, float] | None = None,
    ) -> RunView:
        """The view of `run` with its console link, items, the creator's `people` entry and the
        stages' first-seen times."""
        duration = elapsed = None
        if run.final and run.create_time is not None and run.modify_time is not None:
            duration = max(run.modify_time - run.create_time, timedelta(0))
        elif not run.final and run.create_time is not None and now is not None:
            elapsed = max(now - run.create_time, timedelta(0))
        moment = now or datetime.now(timezone.utc)
        since, started = stage_since or {}, stage_started or {}
        span = (run.create_time, run.modify_time if run.final else None)
        stages = tuple(
            StageView.of(stage, since.get(stage.key), started.get(stage.key), moment, span)
            for stage in sorted(run.stages, key=lambda stage: stage.step)
        )
        values = {item.name: getattr(run, item.name) for item in fields(Run)}
        values.update(id=run.id.strip(), stages=stages)
        ordered = sorted(items, key=lambda item: not item.failed)  # stable: the rest keep their order
        return cls(
            **values,
            console_url=Url(console_url),
            duration=duration,
            elapsed=elapsed,
            items=tuple(ordered),
            creator_person=creator_person,
        )


# --- headlines ----------------------------------------------------------------------------------

_RUN_HEADLINES: Mapping[str, str] = {
    SUCCESS: "发布成功 · Deployment succeeded",
    FAIL: "发布失败 · Deployment failed",
    RUNNING: "发布进行中 · Deployment in progress",
    INIT: "发布待开始 · Deployment pending",
    TERMINATED: "发布已终止 · Deployment terminated",
    CANCELED: "发布已取消 · Deployment canceled",
}
_STAGE_HEADLINES: Mapping[str, str] = {
    FAIL: "阶段失败 · Stage failed",
    TERMINATED: "阶段已终止 · Stage terminated",
    CANCELED: "阶段已取消 · Stage canceled",
}


_REMINDER_HEADLINES: Mapping[str, str] = {
    "stage.waiting": "等待人工推进 · Waiting for a person",
    "stage.stuck": "阶段运行过久 · Stage running long",
}


def headline(run_status: str, events: Sequence[Event]) -> tuple[str, str]:
    """A message's headline and the status it reports: the run's end, else a stage failure, else progress."""
    for event in reversed(events):
        if event.stage is None and event.type != "run.started":
            return _RUN_HEADLINES.get(event.status, f"发布状态 · Deployment {event.status}"), event.status
    for event in events:
        if event.stage is not None and event.status in _STAGE_HEADLINES:
            return _STAGE_HEADLINES[event.status], event.status
    for event in events:
        if event.type in _REMINDER_HEADLINES:
            return _REMINDER_HEADLINES[event.type], event.status
    if any(event.type == "run.started" for event in events):
        return "发布开始 · Deployment started", RUNNING
    return _RUN_HEADLINES.get(run_status, f"发布状态 · Deployment {run_status}"), run_status


def template_context(ctx: MessageContext) -> dict[str, Any]:
    """The variables a template is rendered with (listed in the `dwnotify.render` docstring)."""
    title, outcome = headline(ctx.run.status, ctx.events)
    return {
        "run": RunView.of(
            ctx.run,
            ctx.console_url,
            ctx.items,
            ctx.person,
            now=ctx.now,
            stage_since=ctx.stage_since,
            stage_started=ctx.stage_started,
        ),
        "events": list(ctx.events),
        "project": ctx.project,
        "rule": {"name": ctx.rule_name},
        "channel": {"name": ctx.channel_name, "type": ctx.channel_type},
        "now": ctx.now,
        "headline": title,
        "outcome": outcome,
        "mention": Mention(ctx.mention),
    }
