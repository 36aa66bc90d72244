"""What a run offers to do from chat, and whether a click may do it: pure, no I/O.

A run *waits at a gate* when it is running, every stage before one succeeded and that one is still
`init`: it offers "advance" (DataWorks' `ExecPipelineRunStage` on that stage). A run that still
moves offers "abolish" (`AbolishPipelineRun`), named by its current stage. Only what `actions.allow`
lists is offered, and only when `actions.enabled`.

A click is judged again against the run as DataWorks reads it when the click comes (`refusal`): the
buttons on a message are as old as its last edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import INIT, RUNNING, SUCCESS, Run, Stage, is_final
from .settings import ActionsSettings, ChannelSettings, PersonSettings, RuleSettings

ADVANCE = "advance"
ABOLISH = "abolish"
ACTION_ID_PREFIX = "dwnotify:"  # a button's action_id is this and the action's name


@dataclass(frozen=True)
class Offer:
    """One action a run's message offers: what, on which run and stage, and the button's label."""

    action: str
    project: int
    run: str
    stage: str
    label: str
    stage_name: str = ""  # the stage's Name, for the words of the confirm dialog

    @property
    def action_id(self) -> str:
        """The button's `action_id`: `dwnotify:advance` or `dwnotify:abolish`."""
        return ACTION_ID_PREFIX + self.action

    @property
    def value(self) -> dict[str, Any]:
        """The button's `value` (as JSON): `{"project": <id>, "run": "<id>", "stage": "<Code>"}`."""
        return {"project": self.project, "run": self.run, "stage": self.stage}


def gate(run: Run) -> Stage | None:
    """The stage a running run waits at (every earlier stage succeeded, this one `init`), if any."""
    if run.status != RUNNING:
        return None
    for stage in sorted(run.stages, key=lambda s: s.step):
        if stage.status == SUCCESS:
            continue
        return stage if stage.status == INIT else None
    return None


def current_stage(run: Run) -> Stage | None:
    """The first stage that has not succeeded (the one the run is at), if any."""
    return next((s for s in sorted(run.stages, key=lambda s: s.step) if s.status != SUCCESS), None)


def offers(run: Run, settings: ActionsSettings) -> tuple[Offer, ...]:
    """The actions the run's message offers now (none once it has ended, or with actions off)."""
    if not settings.enabled or is_final(run.status):
        return ()
    found: list[Offer] = []
    waiting = gate(run)
    if ADVANCE in settings.allow and waiting is not None:
        label = f"Advance to {waiting.name or waiting.code}"
        found.append(Offer(ADVANCE, run.project_id, run.id, waiting.code, label, waiting.name))
    at = current_stage(run)
    if ABOLISH in settings.allow and at is not None:
        found.append(Offer(ABOLISH, run.project_id, run.id, at.code, "Abolish run", at.name))
    return tuple(found)


@dataclass(frozen=True)
class Click:
    """A verified click as the button's value and Slack's payload name it."""

    action: str
    project: int
    run: str
    stage: str
    user_id: str
    channel_id: str
    message_ts: str
    response_url: str

    @property
    def key(self) -> str:
        """Identity of the decision: one effect per (run, stage, action)."""
        return f"{self.project}/{self.run}/{self.stage}/{self.action}"


def click_of(action_id: str, value: Mapping[str, Any], **where: str) -> Click | None:
    """The Click a button's `action_id` and `value` describe; None when they are not dwnotify's."""
    if not action_id.startswith(ACTION_ID_PREFIX):
        return None
    action = action_id[len(ACTION_ID_PREFIX) :]
    project, run, stage = value.get("project"), value.get("run"), value.get("stage")
    if action not in (ADVANCE, ABOLISH) or isinstance(project, bool) or not isinstance(project, int):
        return None
    if not isinstance(run, str) or not run or not isinstance(stage, str):
        return None
    return Click(action, project, run, stage, **where)


def slack_app_channels(channels: Iterable[ChannelSettings], slack_channel_id: str) -> list[ChannelSettings]:
    """The slack-app channels that post to Slack channel `slack_channel_id` (a click on one of their
    messages is verified with their signing secret, and acted on with their token)."""
    if not slack_channel_id:
        return []
    return [c for c in channels if c.type == "slack-app" and c.options.get("channel") == slack_channel_id]


def approvers(
    settings: ActionsSettings, rules: Sequence[RuleSettings], channel: str, project: int
) -> set[str]:
    """The people ids who may act on a run of `project` in `channel`'s messages: every rule that sends
    the workspace's runs there lends its approvers (its own, else `actions.approvers`)."""
    found: set[str] = set()
    for rule in rules:
        if channel in rule.channels and (rule.projects is None or project in rule.projects):
            found.update(settings.approvers_for(rule.name))
    return found


def not_allowed(
    click: Click,
    settings: ActionsSettings,
    person: PersonSettings | None,
    allowed: Iterable[str],
) -> str | None:
    """Why this person may not do this (the ephemeral's text), or None when they may.

    Who created the run makes no difference: only the approvers listed may act.
    """
    if click.action not in settings.allow:
        return f"{click.action} is not allowed from chat here (actions.allow)."
    if person is None:
        return "you are not in this notifier's people list, so you may not act on runs from here."
    if person.id not in set(allowed):
        return f"you are not an approver of this run, so you may not {click.action} it."
    return None


def refusal(click: Click, run: Run | None) -> str | None:
    """Why the run as DataWorks reads it now may no longer take this click, or None when it may."""
    if run is None:
        return f"run {click.run} is no longer known to DataWorks."
    if is_final(run.status):
        return f"run {click.run} has already ended ({run.status})."
    if click.action == ADVANCE:
        waiting = gate(run)
        if waiting is None or waiting.code != click.stage:
            stage = next((s for s in run.stages if s.code == click.stage), None)
            now = f"it is {stage.status}" if stage is not None else "the run has no such stage"
            return f"stage {click.stage} is no longer waiting to be advanced ({now})."
    return None
