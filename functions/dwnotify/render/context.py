"""The view model a template is rendered from: a message's context, the run as it sees it, the headline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
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


class Url(str):
    """A URL from the settings (the console link): escaped as a link target, not as text."""

    __slots__ = ()


class Mention(str):
    """A live mention dwnotify wrote in the channel's markup (`mention`): output as it is."""

    __slots__ = ()


@dataclass(frozen=True)
class RunView(Run):
    """The `run` a template sees: Id trimmed, stages in Step order, plus `console_url`, `duration` and
    `items` (what it deploys, the failed ones first; empty when they were not read for this message)."""

    console_url: str = ""
    duration: timedelta | None = None
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
    ) -> RunView:
        """The view of `run` with its console link, items and the creator's `people` entry."""
        duration = None
        if run.final and run.create_time is not None and run.modify_time is not None:
            duration = max(run.modify_time - run.create_time, timedelta(0))
        values = {item.name: getattr(run, item.name) for item in fields(Run)}
        values.update(id=run.id.strip(), stages=tuple(sorted(run.stages, key=lambda stage: stage.step)))
        ordered = sorted(items, key=lambda item: not item.failed)  # stable: the rest keep their order
        return cls(
            **values,
            console_url=Url(console_url),
            duration=duration,
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


def headline(run_status: str, events: Sequence[Event]) -> tuple[str, str]:
    """A message's headline and the status it reports: the run's end, else a stage failure, else progress."""
    for event in reversed(events):
        if event.stage is None and event.type != "run.started":
            return _RUN_HEADLINES.get(event.status, f"发布状态 · Deployment {event.status}"), event.status
    for event in events:
        if event.stage is not None and event.status in _STAGE_HEADLINES:
            return _STAGE_HEADLINES[event.status], event.status
    if any(event.type == "run.started" for event in events):
        return "发布开始 · Deployment started", RUNNING
    return _RUN_HEADLINES.get(run_status, f"发布状态 · Deployment {run_status}"), run_status


def template_context(ctx: MessageContext) -> dict[str, Any]:
    """The variables a template is rendered with (listed in the `dwnotify.render` docstring)."""
    title, outcome = headline(ctx.run.status, ctx.events)
    return {
        "run": RunView.of(ctx.run, ctx.console_url, ctx.items, ctx.person),
        "events": list(ctx.events),
        "project": ctx.project,
        "rule": {"name": ctx.rule_name},
        "channel": {"name": ctx.channel_name, "type": ctx.channel_type},
        "now": ctx.now,
        "headline": title,
        "outcome": outcome,
        "mention": Mention(ctx.mention),
    }
