"""Slack's request signature (v0) and the interactivity payload it covers: pure, the time a parameter.

Slack signs each request to the app's request URL: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing
secret, "v0:" + X-Slack-Request-Timestamp + ":" + raw body)>`. A request is taken as Slack's only when
that matches (compared in constant time) and the timestamp is within `MAX_SKEW_S` of now, either way:
an old body replayed with its old headers is refused. The body of an interaction is the form field
`payload=<json>`; a `block_actions` payload names the message it came from (`channel.id`,
`container.message_ts` or `message.ts`), whose channel's secret is the one to check against.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .credentials import Secret

VERSION = "v0"
MAX_SKEW_S = 300  # five minutes, as Slack's documentation asks
SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
RETRY_HEADER = "x-slack-retry-num"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value Slack would send for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (FC capitalizes header keys; Slack sends them lower-case)."""
    wanted = name.lower()
    return next((str(value) for key, value in headers.items() if key.lower() == wanted), None)


def verify(headers: Mapping[str, str], body: bytes, secrets: Iterable[Secret], now: float) -> str | None:
    """None when the request carries a fresh signature made with one of `secrets`; else why not.

    The reason names what failed (missing header, stale timestamp, no matching secret), never a value.
    """
    sent, timestamp = header(headers, SIGNATURE_HEADER), header(headers, TIMESTAMP_HEADER)
    if not sent or not timestamp:
        return "the signature or timestamp header is missing"
    if not timestamp.isascii() or not timestamp.isdigit():
        return "the timestamp is not a whole number of seconds"
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        return "the timestamp is more than five minutes from now"
    for secret in secrets:
        expected = signature(secret.reveal(), timestamp, body)
        if hmac.compare_digest(expected.encode(), sent.strip().encode("utf-8", errors="replace")):
            return None
    return "the signature matches no signing secret of the message's channel"


def retry_number(headers: Mapping[str, str]) -> int:
    """`X-Slack-Retry-Num`: 0 for a first delivery, n for Slack's n-th retry."""
    value = (header(headers, RETRY_HEADER) or "").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


@dataclass(frozen=True)
class Interaction:
    """What a `block_actions` payload says was clicked, where, and by whom (unverified until checked)."""

    type: str
    user_id: str
    channel_id: str
    message_ts: str
    action_id: str
    value: Mapping[str, Any]
    response_url: str
    # The message the button is on, as Slack shows it now: edited at once after the click.
    message_blocks: tuple[Mapping[str, Any], ...] = ()
    message_text: str = ""

    @property
    def run(self) -> str:
        """The run id the button's value names ("" when it names none)."""
        return str(self.value.get("run") or "")

    @property
    def stage(self) -> str:
        """The stage code the button's value names ("" when it names none)."""
        return str(self.value.get("stage") or "")


def parse_payload(body: bytes) -> Interaction | None:
    """The interaction in a `payload=<json>` form body; None when the body is not one."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
        payload = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    channel, container, message = (_mapping(payload.get(key)) for key in ("channel", "container", "message"))
    actions = payload.get("actions")
    action = _mapping(actions[0]) if isinstance(actions, list) and actions else {}
    return Interaction(
        type=str(payload.get("type") or ""),
        user_id=str(_mapping(payload.get("user")).get("id") or ""),
        channel_id=str(channel.get("id") or container.get("channel_id") or ""),
        message_ts=str(container.get("message_ts") or message.get("ts") or ""),
        action_id=str(action.get("action_id") or ""),
        value=_value(action.get("value")),
        response_url=str(payload.get("response_url") or ""),
        message_blocks=tuple(b for b in message.get("blocks") or () if isinstance(b, dict))
        if isinstance(message.get("blocks"), list)
        else (),
        message_text=str(message.get("text") or ""),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _value(value: object) -> Mapping[str, Any]:
    """A button's `value`: JSON `{"project", "run", "stage"}` as dwnotify writes it, else empty."""
    if not isinstance(value, str):
        return {}
    try:
        decoded = json.loads(value)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
