"""Carrying out a verified click: exactly one effect per decision, in two steps.

`Actor.take` runs while Slack waits for its 3-second acknowledgement: it finds the click's person and
approvers (`dwnotify.actions`), and claims the decision (run, stage, action) with a conditional write
of an `ActionRecord`. Only the request that made that write goes on; a second click, a Slack retry
(`X-Slack-Retry-Num`), a replayed body or a second invocation finds the record and does nothing. The
rest is deferred (`defer`: a thread in `dwnotify serve`, an async self-invocation on FC, or at once):

`Actor.carry_out` moves the record to `calling` (compare-and-set, so an invocation FC retries does
nothing twice), reads the run (a stage that has moved, or a run that has ended, is refused with its
reason), calls `ExecPipelineRunStage` or `AbolishPipelineRun`, edits the run's message at once
("advance requested by <@U…> at HH:MM", the buttons gone) and stores the result. DataWorks carries
both actions out asynchronously: the next polls show what came of it.

Whoever may not act gets an ephemeral reply through the payload's `response_url`, only when its host
is one of `actions.response_hosts`. Every click ends in one audit line: who, what, run, stage, result
and the DataWorks request id. The response_url and the message's blocks ride in the record (the
deferred step's input), never in a log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from .actions import ADVANCE, Click, approvers, click_of, not_allowed, refusal, slack_app_channels
from .errors import ConflictError, DataWorksError, DeliveryError, StateError
from .model import Run
from .settings import ChannelSettings, PersonSettings, ProjectSettings, Settings
from .slack_verify import Interaction
from .state.base import ACTION_FAILED, ActionRecord, StateStore
from .zones import zone

log = logging.getLogger("dwnotify.acting")
audit = logging.getLogger("dwnotify.audit")

CLAIMED, CALLING, DONE, REFUSED, UNKNOWN = "claimed", "calling", "done", "refused", "unknown"
DUPLICATE = "duplicate"  # the audit result of a click whose decision was already taken
NOT_ALLOWED = "not allowed"
IGNORED = "ignored"  # not a dwnotify button


class ActionsSource(Protocol):
    """What the actor asks DataWorks (`DataWorksClient`)."""

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        """One run by id, or None when DataWorks no longer knows it."""
        ...

    def exec_stage(
        self, project: ProjectSettings, run_id: str, code: str, *, deadline: float | None = None
    ) -> str:
        """Advance the run's waiting stage; DataWorks' request id."""
        ...

    def abolish_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> str:
        """Abolish the run; DataWorks' request id."""
        ...


class ActionsChat(Protocol):
    """What the actor does in Slack (`channels.slack_app.SlackAppChannel`)."""

    def edit_blocks(self, channel_id: str, ts: str, text: str, blocks: Any) -> None:
        """Edit a message to these blocks."""
        ...

    def respond(self, response_url: str, text: str) -> None:
        """Answer the clicker alone (an ephemeral message)."""
        ...


@dataclass(frozen=True)
class _Pending:
    """What the deferred step needs, kept in the record: the click, its channel and the message."""

    click: Click
    channel: str
    blocks: list[Mapping[str, Any]]
    text: str

    def to_json(self) -> str:
        return json.dumps(
            {"click": asdict(self.click), "channel": self.channel, "blocks": self.blocks, "text": self.text},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> _Pending | None:
        try:
            data = json.loads(raw)
            return cls(Click(**data["click"]), str(data["channel"]), list(data["blocks"]), str(data["text"]))
        except (ValueError, KeyError, TypeError):
            return None


class Actor:
    """Takes verified clicks (`take`) and carries out the decisions they claimed (`carry_out`)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        source: ActionsSource,
        chat: Callable[[ChannelSettings], ActionsChat],
        *,
        clock: Callable[[], float],
        defer: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._source = source
        self._chat = chat
        self._clock = clock
        self._defer = defer or self.carry_out

    def take(self, interaction: Interaction, retry: int = 0) -> str:
        """Judge a verified click and claim its decision; the audit result (what was done now)."""
        click = click_of(
            interaction.action_id,
            interaction.value,
            user_id=interaction.user_id,
            channel_id=interaction.channel_id,
            message_ts=interaction.message_ts,
            response_url=interaction.response_url,
        )
        person = self._person(interaction.user_id)
        if click is None:
            return self._audit(interaction.user_id, person, None, IGNORED, retry=retry)
        channel = self._channel_of(click.channel_id)
        if channel is None:
            why: str | None = "this channel's messages are not this notifier's."
        else:
            allowed = approvers(self._settings.actions, self._settings.rules, channel.name, click.project)
            why = not_allowed(click, self._settings.actions, person, allowed)
        if why is not None or channel is None:
            self._respond(click, channel, why or "")
            return self._audit(click.user_id, person, click, NOT_ALLOWED, detail=why or "", retry=retry)
        pending = _Pending(click, channel.name, list(interaction.message_blocks), interaction.message_text)
        claimed = self._claim(click, person, pending)
        if claimed is None:
            return self._audit(click.user_id, person, click, DUPLICATE, retry=retry)
        self._audit(click.user_id, person, click, CLAIMED, retry=retry)
        try:
            self._defer(claimed.key)
        except Exception as error:
            detail = f"the action could not be started: {type(error).__name__}"
            log.error("actions: %s", detail, extra={"run_id": click.run})
            stored = self._store.load_action(claimed.key)
            if stored is None or stored.result != CLAIMED:  # it got as far as its record says
                return UNKNOWN
            self._store_result(stored, ACTION_FAILED, detail)  # nothing was called: it may be tried again
            self._respond(click, channel, f"{detail}; try again.")
            return ACTION_FAILED
        return CLAIMED

    def _claim(self, click: Click, person: PersonSettings | None, pending: _Pending) -> ActionRecord | None:
        """The record this request stored for the decision; None when one was already taken."""
        stored = self._store.load_action(click.key)
        if stored is not None and stored.final:
            return None
        record = ActionRecord(
            click.key,
            user_id=click.user_id,
            person=person.id if person else "",
            at=self._clock(),
            result=CLAIMED,
            click_json=pending.to_json(),
            version=stored.version if stored is not None else 0,
        )
        try:
            return self._store.store_action(record, self._clock())
        except ConflictError:  # another request claimed it between the read and the write
            return None

    def carry_out(self, key: str) -> str:
        """Call DataWorks for a claimed decision, edit the message, store the result; the result."""
        record = self._store.load_action(key)
        pending = _Pending.from_json(record.click_json) if record is not None else None
        if record is None or record.result != CLAIMED or pending is None:
            log.info("actions: %s is not waiting to be carried out; nothing done", key)
            return DUPLICATE
        try:
            record = self._store.store_action(replace(record, result=CALLING), self._clock())
        except ConflictError:  # a retried invocation got here first
            return DUPLICATE
        click, person = pending.click, self._person(pending.click.user_id)
        channel = self._settings.channels.get(pending.channel)
        try:
            result, detail, request_id = self._call(click)
        except Exception as error:  # a bug: whether DataWorks acted is not known, so never again
            log.error("actions: carrying out %s failed", key, exc_info=error)
            result, detail, request_id = UNKNOWN, f"failed unexpectedly ({type(error).__name__})", ""
        self._store_result(record, result, detail, request_id)
        if result in (DONE, UNKNOWN) and channel is not None:
            self._edit(click, channel, pending)
        elif result in (REFUSED, ACTION_FAILED):
            self._respond(click, channel, detail)
        return self._audit(click.user_id, person, click, result, detail=detail, request_id=request_id)

    def _call(self, click: Click) -> tuple[str, str, str]:
        """(result, detail, DataWorks request id) of the decision's DataWorks calls."""
        from .dataworks import ambiguous

        project = self._settings.dataworks.project(click.project)
        try:
            run = self._source.get_run(project, click.run)
        except DataWorksError as error:  # nothing was written: the click may be tried again
            return (
                ACTION_FAILED,
                f"DataWorks could not be read: {error.code or error}.",
                error.request_id or "",
            )
        why = refusal(click, run)
        if why is not None:
            return REFUSED, why, ""
        try:
            if click.action == ADVANCE:
                return DONE, "", self._source.exec_stage(project, click.run, click.stage)
            return DONE, "", self._source.abolish_run(project, click.run)
        except DataWorksError as error:
            if ambiguous(error):
                return (
                    UNKNOWN,
                    f"DataWorks gave no answer ({error.code}); the next poll shows the result.",
                    "",
                )
            return ACTION_FAILED, f"DataWorks refused: {error.code or error}.", error.request_id or ""

    def _store_result(self, record: ActionRecord, result: str, detail: str, request_id: str = "") -> None:
        try:
            self._store.store_action(
                replace(record, result=result, detail=detail[:500], request_id=request_id), self._clock()
            )
        except (ConflictError, StateError) as error:  # the audit line still says what happened
            log.error("actions: the result of %s was not stored: %s", record.key, type(error).__name__)

    def _edit(self, click: Click, channel: ChannelSettings, pending: _Pending) -> None:
        """The message at once: the buttons gone, who asked for what and when."""
        from .channels.slack_app import requested_blocks

        at = datetime.fromtimestamp(self._clock(), zone(self._settings.actions.timezone)).strftime("%H:%M")
        note = f"{click.action} requested by <@{_slack_id(click.user_id)}> at {at}"
        try:
            self._chat(channel).edit_blocks(
                click.channel_id,
                click.message_ts,
                pending.text or note,
                requested_blocks(pending.blocks, note),
            )
        except DeliveryError as error:  # the next poll's edit shows the run as it is anyway
            log.warning("actions: the message of run %s was not edited: %s", click.run, error)

    def _respond(self, click: Click, channel: ChannelSettings | None, text: str) -> None:
        """An ephemeral answer to the clicker, only to a host `actions.response_hosts` lists."""
        host = (urlsplit(click.response_url).hostname or "").lower()
        if host not in self._settings.actions.response_hosts:
            log.warning("actions: the response_url's host %r is not in actions.response_hosts", host[:100])
            return
        if channel is None:
            return
        try:
            self._chat(channel).respond(click.response_url, text)
        except DeliveryError as error:
            log.warning("actions: the answer to %s was not sent: %s", click.user_id, error)

    def _person(self, slack_user_id: str) -> PersonSettings | None:
        if not slack_user_id:
            return None
        return next((p for p in self._settings.people.values() if p.slack_user_id == slack_user_id), None)

    def _channel_of(self, slack_channel_id: str) -> ChannelSettings | None:
        """The slack-app channel that posts to this Slack channel (its signing secret verified the click)."""
        return next(iter(slack_app_channels(self._settings.channels.values(), slack_channel_id)), None)

    def _audit(
        self,
        user_id: str,
        person: PersonSettings | None,
        click: Click | None,
        result: str,
        *,
        detail: str = "",
        request_id: str = "",
        retry: int | None = None,
    ) -> str:
        """One audit line: who, what, run, stage, result and DataWorks' request id."""
        entry: dict[str, Any] = {
            "who": user_id,
            "person": person.id if person else None,
            "action": click.action if click else None,
            "project": click.project if click else None,
            "run": click.run if click else None,
            "stage": click.stage if click else None,
            "result": result,
            "detail": detail or None,
            "request_id": request_id or None,
        }
        if retry is not None:
            entry["retry"] = retry
        audit.info(
            "audit %s", json.dumps(entry, ensure_ascii=False), extra={"run_id": click.run if click else None}
        )
        return result


def _slack_id(user_id: str) -> str:
    """A Slack member id as a mention may hold it (letters and digits only: nothing else is live)."""
    return "".join(ch for ch in user_id if ch.isascii() and ch.isalnum())[:30]
