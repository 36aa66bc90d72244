"""Slack app channels (a bot token and a channel id): one living message per run, edited as it moves.

The Web API (`<api_url>/<method>`, `Authorization: Bearer <token>`) answers HTTP 200 with
`{"ok": true, ...}` or `{"ok": false, "error": "<word>"}`; rate limits come as HTTP 429 with
`Retry-After` (or `ratelimited` in the body). Methods used:

- `chat.postMessage` posts a run's message (its `ts` and the channel's id come back) and, with
  `thread_ts`, the replies in its thread; the message carries `metadata` naming the run and the
  dwnotify channel, so that a post whose answer was lost can be found again;
- `chat.update` edits the message to the run's current state (`message_not_found`: it was deleted,
  so the run is posted anew);
- `conversations.history` (scope `channels:history`, `groups:history` for a private channel) with
  `include_all_metadata` finds that message after a crash between the post and its record;
- `auth.test` checks the token (`dwnotify check --online` only).

Buttons (issue 15): `with_offers` appends an `actions` block (block_id `dwnotify_actions`) with one
button per `actions.Offer`, each behind a `confirm` dialog saying what the click does; all their text
is plain_text, so a DataWorks name in it stays inert. After a click the message is edited at once
(`requested_blocks`, `edit_blocks`: the buttons give way to a note of who asked for what), and the
person who clicked is answered through the payload's `response_url` (`respond`: an ephemeral message
only they see; Slack takes it without a token).

The message layout (Block Kit fitting, mrkdwn sections, escaping) is Slack's, shared with the
incoming-webhook channel (`channels.slack`). The living-message protocol itself (which call when,
what is stored) is in `dwnotify.living`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from ..actions import ADVANCE, Offer
from ..addresses import url_problem
from ..errors import DeliveryError
from ..living import MessageGone, Posted
from ..message import Message
from ..text import TRIM_MARKER, trim_utf8
from .base import HttpChannel, retry_after_seconds
from .kind import ChannelType, DigestRules, RateBudget, TemplateFormat
from .slack import (
    MARKUP,
    MAX_BLOCKS,
    MAX_TEXT_CHARS,
    MAX_TEXT_OBJECT_CHARS,
    PERSON_IDS,
    build_payload,
    escape_mrkdwn,
    fit_blocks,
    layout_problems,
    sections,
    slack_mention,
    truncate,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api"
METADATA_EVENT = "dwnotify_run"  # the `event_type` of the metadata a run's message carries
HISTORY_PAGE = 200  # messages per conversations.history page
HISTORY_PAGES = 5  # pages looked through for a lost post before it is taken as not made
HISTORY_SLACK_S = 120.0  # looked for from this long before the post started: clocks differ
_RATE_LIMIT_WAIT_S = 30.0  # when a 429 gives no Retry-After

# Error words worth trying again; any other `ok: false` is the request's own fault, for good.
_TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})

ACTIONS_BLOCK_ID = "dwnotify_actions"  # the block of buttons, which a click's edit takes away
# Block Kit's limits for a button and its confirm dialog (docs.slack.dev, "Button element" and
# "Confirmation dialog object"; slack_sdk's ButtonElement and ConfirmObject check the same).
MAX_BUTTON_TEXT_CHARS = 75
MAX_BUTTON_VALUE_CHARS = 2_000
MAX_CONFIRM_TITLE_CHARS = 100
MAX_CONFIRM_TEXT_CHARS = 300
MAX_CONFIRM_BUTTON_CHARS = 30


class SlackAppChannel(HttpChannel):
    """One Slack channel through the Web API with a bot token."""

    def _api_url(self, method: str) -> str:
        base = self._settings.options.get("api_url")
        return f"{(base.reveal() if base is not None else DEFAULT_API_URL).rstrip('/')}/{method}"

    def _headers(self, kind: str) -> dict[str, str]:
        token = self._settings.options.get("token")
        if token is None:
            raise DeliveryError("the channel has no token", channel=self.name, retryable=False)
        return {"Content-Type": kind, "Authorization": f"Bearer {token.reveal()}"}

    def call(self, method: str, payload: Mapping[str, Any], *, form: bool = False) -> dict[str, Any]:
        """One Web API call; its answer when `ok`, else a DeliveryError (MessageGone for a deleted message).

        Write methods take JSON; read methods (`form`) take form fields, as Slack requires.
        """
        if form:
            body = urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in payload.items()})
            response = self._post(
                self._api_url(method),
                content=body.encode(),
                headers=self._headers("application/x-www-form-urlencoded"),
            )
        else:
            content = json.dumps(dict(payload), ensure_ascii=False).encode("utf-8")
            response = self._post(
                self._api_url(method),
                content=content,
                headers=self._headers("application/json; charset=utf-8"),
            )
        if response.status_code == 429:
            wait = retry_after_seconds(response, _RATE_LIMIT_WAIT_S)
            raise DeliveryError(
                f"{method}: rate limited", channel=self.name, retryable=True, retry_after=wait
            )
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code == 408
            raise DeliveryError(
                f"{method}: HTTP {response.status_code}", channel=self.name, retryable=retryable
            )
        try:
            answer = response.json()
        except ValueError:
            raise DeliveryError(
                f"{method}: the answer is not JSON", channel=self.name, retryable=True
            ) from None
        if not isinstance(answer, dict):
            raise DeliveryError(
                f"{method}: the answer is not a JSON object", channel=self.name, retryable=True
            )
        if answer.get("ok") is True:
            return answer
        word = str(answer.get("error") or "unknown_error")[:100]
        needed = (
            f" (needs scope {answer['needed']})" if word == "missing_scope" and answer.get("needed") else ""
        )
        reason = f"{method}: {word}{needed}"
        if word == "message_not_found":
            raise MessageGone(reason, channel=self.name, retryable=False)
        if word in _RATE_LIMITED:
            wait = retry_after_seconds(response, _RATE_LIMIT_WAIT_S)
            raise DeliveryError(reason, channel=self.name, retryable=True, retry_after=wait)
        raise DeliveryError(reason, channel=self.name, retryable=word in _TRANSIENT)

    def _channel(self) -> str:
        return str(self._settings.options.get("channel") or "")

    def _content(self, message: Message) -> dict[str, Any]:
        # The run's message pings no one, not even in its notification text: who is to act is
        # mentioned in the thread replies, which notify (an edit never does).
        quiet = replace(message, mentions=())
        return {**build_payload(quiet, self.name), "unfurl_links": False, "unfurl_media": False}

    def send(self, message: Message) -> None:
        """Post a message of its own (not a run's living message)."""
        self.call("chat.postMessage", {"channel": self._channel(), **self._content(message)})

    def post(self, message: Message, run_key: str) -> Posted:
        """Post a run's message, marked with metadata that `find` looks for; where it was posted."""
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"run": run_key, "channel": self.name}}
        answer = self.call(
            "chat.postMessage", {"channel": self._channel(), **self._content(message), "metadata": metadata}
        )
        return self._posted(answer, "chat.postMessage")

    def update(self, posted: Posted, message: Message) -> None:
        """Edit a run's message to `message`; MessageGone when it no longer exists."""
        self.call("chat.update", {"channel": posted.channel_id, "ts": posted.ts, **self._content(message)})

    def reply(self, posted: Posted, text: str) -> None:
        """Reply in a run's message's thread."""
        payload = {
            "channel": posted.channel_id,
            "thread_ts": posted.ts,
            "text": trim_utf8(text, MAX_TEXT_CHARS),
            "blocks": sections(text),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        self.call("chat.postMessage", payload)

    def find(self, run_key: str, since: float) -> Posted | None:
        """The run's message posted since `since` (epoch seconds), if the channel's history has it."""
        cursor = ""
        for _ in range(HISTORY_PAGES):
            fields: dict[str, Any] = {
                "channel": self._channel(),
                "oldest": f"{max(0.0, since - HISTORY_SLACK_S):.6f}",
                "include_all_metadata": True,
                "limit": HISTORY_PAGE,
            }
            if cursor:
                fields["cursor"] = cursor
            answer = self.call("conversations.history", fields, form=True)
            for message in answer.get("messages") or ():
                if self._is_ours(message, run_key) and message.get("ts"):
                    return Posted(str(answer.get("channel") or self._channel()), str(message["ts"]))
            cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
            if not answer.get("has_more") or not cursor:
                return None
        log.warning(
            "slack-app: run %s's message was not among the last %d messages of %s; taken as not posted",
            run_key,
            HISTORY_PAGES * HISTORY_PAGE,
            self.name,
        )
        return None

    def _is_ours(self, message: Any, run_key: str) -> bool:
        metadata = message.get("metadata") if isinstance(message, dict) else None
        if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT:
            return False
        payload = metadata.get("event_payload")
        return (
            isinstance(payload, dict)
            and payload.get("run") == run_key
            and payload.get("channel") == self.name
        )

    def edit_blocks(self, channel_id: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]) -> None:
        """Edit a message to these blocks (`chat.update`), e.g. `requested_blocks` right after a click."""
        payload = {
            "channel": channel_id,
            "ts": ts,
            "text": trim_utf8(text, MAX_TEXT_CHARS),
            "blocks": [dict(block) for block in blocks],
        }
        self.call("chat.update", payload)

    def respond(self, response_url: str, text: str) -> None:
        """Answer the person who clicked with an ephemeral message through the click's `response_url`.

        `text` is plain: it is escaped for mrkdwn (a stage status or a run id from DataWorks stays inert).
        Slack takes the POST without a token and answers 200 `ok`. The caller has checked the URL's host
        against `actions.response_hosts`; here plain http is refused too, except to loopback (the
        stand-in), and nothing is sent: the URL lets whoever holds it post in the click's place.
        """
        problem = url_problem(response_url)
        if problem is not None:
            raise DeliveryError(f"the response_url {problem}", channel=self.name, retryable=False)
        body = {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": trim_utf8(escape_mrkdwn(text), MAX_TEXT_CHARS),
        }
        response = self._post(response_url, body)
        if response.status_code == 200:
            return
        reason = f"response_url: HTTP {response.status_code} {response.text.strip()[:100]}".rstrip()
        if response.status_code == 429:
            wait = retry_after_seconds(response, 1.0)
            raise DeliveryError(reason, channel=self.name, retryable=True, retry_after=wait)
        raise DeliveryError(reason, channel=self.name, retryable=response.status_code >= 500)

    def auth_test(self) -> dict[str, Any]:
        """Who the token is (`auth.test`): team, user and bot ids; DeliveryError when it is refused."""
        return self.call("auth.test", {}, form=True)

    def _posted(self, answer: Mapping[str, Any], method: str) -> Posted:
        ts, channel = answer.get("ts"), answer.get("channel")
        if not isinstance(ts, str) or not ts:
            # Posted, perhaps, but not known where: the post is looked for before it is tried again.
            raise DeliveryError(f"{method}: the answer has no ts", channel=self.name, retryable=True)
        return Posted(str(channel or self._channel()), ts)


# --- buttons ------------------------------------------------------------------------------------


def with_offers(message: Message, offers: Sequence[Offer]) -> Message:
    """The message with a button for each offer in an `actions` block at its end; as it is without offers.

    The content (the message's own blocks fitted to Block Kit, else the mrkdwn layout of its text) is
    cut to leave room for the buttons within Block Kit's 50 blocks: they are never the block cut.
    """
    buttons = [button for button in map(_button, offers) if button is not None]
    if not buttons:
        return message
    content = None
    if message.blocks is not None:
        fitted = fit_blocks(message.blocks)
        if fitted.problems:
            log.warning("slack-app: template blocks fitted to Block Kit: %s", "; ".join(fitted.problems))
        content = fitted.blocks
    if content is None:
        content = sections(message.text)
    actions = {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": buttons}
    return replace(message, blocks=(*_within(content, MAX_BLOCKS - 1), actions))


def requested_blocks(blocks: Sequence[Mapping[str, Any]], note: str) -> list[dict[str, Any]]:
    """A clicked message's blocks (as the click's payload carries them) without its buttons, and with a
    context line holding `note` (mrkdwn, e.g. "advance requested by <@U123> at 14:05") at the end."""
    kept = [dict(block) for block in blocks if block.get("block_id") != ACTIONS_BLOCK_ID]
    if not note.strip():
        return kept
    context = {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": truncate(note, MAX_TEXT_OBJECT_CHARS)}],
    }
    return [*_within(kept, MAX_BLOCKS - 1), context]


def _within(blocks: list[dict[str, Any]], room: int) -> list[dict[str, Any]]:
    """At most `room` blocks: the first ones, a marker, and the last one (the console link)."""
    if len(blocks) <= room:
        return blocks
    marker = {"type": "context", "elements": [{"type": "mrkdwn", "text": TRIM_MARKER}]}
    return [*blocks[: room - 2], marker, blocks[-1]]


def _plain(text: str, limit: int) -> dict[str, Any]:
    # plain_text, not mrkdwn: a stage name's `<!channel>` or `*` is shown, never read; `emoji: false`
    # keeps its `:name:` as typed too.
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": False}


def _button(offer: Offer) -> dict[str, Any] | None:
    """The offer's button behind its confirm dialog; None when its value is over Slack's limit."""
    value = json.dumps(offer.value)
    if len(value) > MAX_BUTTON_VALUE_CHARS:
        log.warning("slack-app: run %s's %s button left out: its value is too long", offer.run, offer.action)
        return None
    advance = offer.action == ADVANCE
    style = "primary" if advance else "danger"
    return {
        "type": "button",
        "action_id": offer.action_id,
        "text": _plain(offer.label or offer.action, MAX_BUTTON_TEXT_CHARS),
        "value": value,
        "style": style,
        "confirm": {
            "title": _plain("Advance this run?" if advance else "Abolish this run?", MAX_CONFIRM_TITLE_CHARS),
            "text": _plain(_consequence(offer), MAX_CONFIRM_TEXT_CHARS),
            "confirm": _plain("Advance" if advance else "Abolish", MAX_CONFIRM_BUTTON_CHARS),
            "deny": _plain("Cancel", MAX_CONFIRM_BUTTON_CHARS),
            "style": style,
        },
    }


def _consequence(offer: Offer) -> str:
    """What the click does, in the words the confirm dialog asks it."""
    if offer.action == ADVANCE:
        return f"Advance run {offer.run} to {offer.stage_name or offer.stage}?"
    return f"Abolish run {offer.run}? Its remaining stages will not run."


_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")


def _check(options: Mapping[str, str | None]) -> list[tuple[str, str]]:
    problems = []
    channel, token = options.get("channel"), options.get("token")
    if channel is not None and not _CHANNEL_ID.fullmatch(channel):
        problems.append(
            (
                "channel",
                "must be the channel's ID such as C0123456 (channel details, at the bottom): editing and "
                "finding a message need the ID, not the name",
            )
        )
    if token and not token.startswith(("xoxb-", "xoxp-")):
        problems.append(("token", "a Slack app token starts with 'xoxb-' (bot) or 'xoxp-' (user)"))
    return problems


TYPE = ChannelType(
    name="slack-app",
    # signing_secret: the app's, checking Slack's interactivity requests (dwnotify.slack_verify).
    options={"token": "secret", "channel": "text", "api_url": "url", "signing_secret": "secret"},
    required=frozenset({"token", "channel"}),
    # Within one folder a `blocks.json` template wins over a `mrkdwn` one; `<name>-reply.mrkdwn.j2`
    # renders a thread reply.
    formats=(TemplateFormat("blocks.json", MARKUP, is_json=True), TemplateFormat("mrkdwn", MARKUP)),
    # chat.postMessage allows about one message a second per channel; chat.update more. One call a
    # second keeps a burst of changes inside both; a 429 pauses the channel for its Retry-After.
    rate=RateBudget(1, 1.1, inline_wait_s=8.0),
    digest=DigestRules(36_000),
    sender=SlackAppChannel,
    check=_check,
    layout_problems=layout_problems,
    mention=slack_mention,
    person_ids=PERSON_IDS,  # the same Slack member IDs
    living=True,
    with_offers=with_offers,  # the run's action buttons (signed clicks come back to /slack/actions)
)
